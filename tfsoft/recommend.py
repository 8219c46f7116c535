"""Top-k items for one user of a saved run, from the run's checkpoint.

The query reads the user's most recent ``data.max_history`` interactions (all of them, test
items included: this is "what next, now"), scores the whole catalog with the shared exact
top-k (:func:`tfsoft.topk.exact_top_k`: the OOV row is never returned; with
``exclude_seen`` the user's items are excluded).

With ``--export-dir`` the exported version answers; :func:`verify_newest_export` checks its
files against their checksums first.
"""

from __future__ import annotations

import numpy as np

from tfsoft.errors import RunError
from tfsoft.loaded_run import LoadedRun


def user_history(run: LoadedRun, user) -> tuple[object, int, np.ndarray]:
    """(raw user id, user index, the user's item indices oldest first) from the run's data.

    Raises:
        RunError: the user is not in the run's user vocabulary.
    """
    prepared = run.prepared
    index = int(prepared.users.lookup([user])[0])
    if index == 0:
        examples = ", ".join(map(str, prepared.users.tokens[:5]))
        raise RunError(f"user {user!r} is not in the run's user vocabulary (e.g. {examples})")
    frame = prepared.interactions
    raw_user = prepared.users.tokens[index - 1]
    return raw_user, index, prepared.items.lookup(frame.loc[frame["user"] == raw_user, "item"])


def recommend(run: LoadedRun, user, *, k: int = 10, exclude_seen: bool = True) -> dict:
    """Top-``k`` items for ``user`` (a raw id) from the run's checkpoint.

    Returns:
        ``{"user": raw id, "history": [raw ids, oldest first], "items": [raw ids], "scores": [...]}``.
    """
    if k < 1:
        raise RunError(f"k must be >= 1; got {k}")
    from tfsoft.backend import tf
    from tfsoft.data import Ragged, query_features
    from tfsoft.topk import exact_top_k

    raw_user, index, history = user_history(run, user)
    items = run.prepared.items
    answer = {"user": raw_user, "history": items.ids(history[-run.max_history:])}
    features = query_features(np.array([index]), Ragged.from_rows([history]), run.max_history)
    exclude = tf.constant(np.asarray(history, np.int64)[np.newaxis, :]) if exclude_seen else None
    indices, scores = exact_top_k(run.model(features), run.model.candidate_embeddings(), k, exclude=exclude)
    indices, scores = indices.numpy()[0], scores.numpy()[0]
    kept = indices > 0  # a catalog smaller than k + exclusions leaves empty slots
    return {**answer, "items": items.ids(indices[kept]), "scores": [float(s) for s in scores[kept]]}


def verify_newest_export(export_dir, version: int | None = None) -> int | None:
    """Check the newest exported version in ``export_dir`` (or ``version``) against its checksum
    manifest (:func:`tfsoft.export.manifest.verify_export`); returns the version checked, None
    when there is none.

    Raises:
        ExportError: naming each damaged, missing or unlisted file of that version.
    """
    from pathlib import Path

    from tfsoft.export.manifest import verify_export
    from tfsoft.export.versions import list_versions

    if version is None:
        versions = list_versions(export_dir)
        if not versions:
            return None
        version = versions[-1]
    verify_export(Path(export_dir) / str(version))
    return version
