"""Top-k for a batch of users through the exported SavedModel's own signature, in this process.

The version is loaded with ``tf.saved_model.load`` after ``import scann`` (ScaNN exports need
its ops registered; STACK.md), and one signature is called per batch:
``serving_default`` (query inputs -> ``item_ids``, ``scores``) or, to leave out each user's
history, ``top_k_excluding`` (+ ``exclude_item_ids``). The query tower, the index (brute force
or ScaNN) and the id vocabularies are all the export's: a batch job answers exactly what the
served model answers. Slots the model leaves empty (score :data:`tfsoft.topk.LOWEST_SCORE`, a
catalog smaller than ``k`` + exclusions) are dropped from the lists.

Used by the in-process job (:mod:`tfsoft.batch.job`) and by Beam's model handler
(:mod:`tfsoft.batch.beam`).

Example:
    >>> runner = SignatureRunner("exports/recs/3", "serving_default")           # doctest: +SKIP
    >>> lists = runner.top_k(query_features(rows, runner.inputs, pad=-1), k=100)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tfsoft.errors import ExportError

TOP_K_OUTPUTS = ("item_ids", "scores")


@dataclass
class TopKLists:
    """Per-row results as flat arrays: row i's items are ``item_ids[offsets[i]:offsets[i + 1]]``."""

    item_ids: np.ndarray
    scores: np.ndarray
    offsets: np.ndarray

    def row(self, i: int) -> tuple[list, list]:
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.item_ids[start:stop].tolist(), self.scores[start:stop].tolist()


def register_custom_ops() -> None:
    """Register ScaNN's TF ops (a ScaNN export does not load without them)."""
    import scann.scann_ops.py.scann_ops  # noqa: F401


def query_features(rows, inputs: Sequence[str], pad) -> dict:
    """The signature's inputs for :class:`~tfsoft.batch.rows.QueryRows`: ``user_id`` [B] and/or
    ``history`` / ``exclude_item_ids`` [B, H] (histories right-padded with ``pad``, an id no
    vocabulary holds: ``-1`` or ``""``)."""
    features = {}
    history = None
    for name in inputs:
        if name == "user_id":
            features[name] = rows.users
        elif name in ("history", "exclude_item_ids"):
            history = rows.padded_history(pad) if history is None else history
            features[name] = history
        else:
            raise ExportError(f"the signature takes input {name!r}, which a batch job cannot fill; "
                              f"it fills user_id, history and exclude_item_ids")
    return features


def flatten_top_k(item_ids: np.ndarray, scores: np.ndarray, k: int, lowest: float) -> TopKLists:
    """[B, n] signature outputs -> :class:`TopKLists` of the first ``k`` of each row, empty slots
    (score <= ``lowest``) dropped."""
    item_ids, scores = item_ids[:, :k], scores[:, :k]
    keep = scores > lowest
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return TopKLists(item_ids[keep], scores[keep].astype(np.float32), offsets)


class SignatureRunner:
    """One loaded SavedModel signature that returns ``item_ids`` and ``scores`` (module docstring).

    Args:
        version_dir: an exported version directory.
        signature: the signature to call.
    """

    def __init__(self, version_dir: str | Path, signature: str):
        from tfsoft.backend import tf

        register_custom_ops()
        self.path, self.signature = Path(version_dir), signature
        self._tf = tf
        self._model = tf.saved_model.load(str(self.path))
        if signature not in self._model.signatures:
            raise ExportError(f"'{self.path}' has no signature {signature!r}; found: "
                              f"{', '.join(sorted(self._model.signatures))}")
        self._function = self._model.signatures[signature]
        _, specs = self._function.structured_input_signature
        self.dtypes = {name: spec.dtype for name, spec in specs.items()}
        self.inputs = tuple(sorted(specs))
        outputs = set(self._function.structured_outputs)
        if not set(TOP_K_OUTPUTS) <= outputs:
            raise ExportError(f"signature {signature!r} of '{self.path}' returns {sorted(outputs)}; a batch job "
                              f"needs {list(TOP_K_OUTPUTS)} (use serving_default or top_k_excluding)")

    def __call__(self, features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw signature outputs ``(item_ids [B, n], scores [B, n])``; string ids as bytes."""
        tf = self._tf
        feed = {name: tf.constant(features[name], dtype=self.dtypes[name]) for name in self.inputs}
        outputs = self._function(**feed)
        return outputs["item_ids"].numpy(), outputs["scores"].numpy()

    def embed(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The ``query_embedding`` signature on the same inputs (for timing the tower apart)."""
        tf = self._tf
        function = self._model.signatures["query_embedding"]
        _, specs = function.structured_input_signature
        return function(**{name: tf.constant(features[name], dtype=spec.dtype)
                           for name, spec in specs.items()})["embedding"].numpy()

    def top_k(self, features: Mapping[str, np.ndarray], k: int) -> TopKLists:
        """The first ``k`` results of each row, empty slots dropped."""
        from tfsoft.topk import LOWEST_SCORE

        item_ids, scores = self(features)
        if k > item_ids.shape[1]:
            raise ExportError(f"'{self.path}' returns the top {item_ids.shape[1]} per user; ask for --k "
                              f"{item_ids.shape[1]} or less, or export again with --k {k}")
        return flatten_top_k(item_ids, scores, k, LOWEST_SCORE)
