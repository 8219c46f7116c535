"""``tfsoft export``: a trained run -> a TF Serving model version.

Steps (data flows one way: run directory -> SavedModel):

1. open the run and load a checkpoint (:func:`tfsoft.loaded_run.open_run`);
2. embed the whole catalog with the candidate tower and build the index (exact or ScaNN);
3. measure the index's recall@k against exact search on real queries (the test split's
   users and histories) and refuse an index below ``export.min_recall`` unless told not to;
4. write ``<version>/`` atomically (:mod:`tfsoft.export.versions`): ``saved_model.pb``,
   ``variables/``, ``assets/`` (``user_ids.txt``, ``item_ids.txt``: one raw id per line),
   ``assets.extra/tf_serving_warmup_requests`` (requests built from real users) and
   ``assets.extra/tfsoft_export.json`` (what was exported, with the measured recall);
5. before publishing, load the staged SavedModel back and check that it answers the warmup
   requests with the in-memory model's items;
6. last, ``assets.extra/tfsoft_manifest.json``: the sha256 and size of every other file of the
   version (:mod:`tfsoft.export.manifest`; readers check it with
   :func:`tfsoft.export.manifest.verify_export`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from tfsoft.backend import tf
from tfsoft.config import Config, ModelConfig
from tfsoft.data import Ragged, query_features
from tfsoft.errors import ExportError
from tfsoft.export.index import INDEX_KINDS, ScannParams, build_index, index_recall
from tfsoft.export.manifest import MANIFEST_PATH, write_export_manifest
from tfsoft.export.servable import PAD_ID, IdLookup, RetrievalServable, write_id_file
from tfsoft.export.versions import publish_version
from tfsoft.export.warmup import WARMUP_FILE, predict_request, write_warmup_requests
from tfsoft.files import atomic_write_json

METADATA_FILE = "tfsoft_export.json"


@dataclass
class ExportResult:
    """What :func:`export_run` published."""

    path: str
    version: int
    index: str
    k: int
    inputs: list
    recall: float
    recall_queries: int
    scann: Optional[dict]
    warmup_records: int
    size_bytes: int
    seconds: float
    signatures: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


#: serving input of each feature a query tower reads (its section's ``query_inputs()``)
SERVING_INPUTS = {"user": "user_id", "history": "history"}


def query_inputs(model: ModelConfig) -> tuple[str, ...]:
    """The raw inputs the serving signatures take: those the query tower declares."""
    return tuple(SERVING_INPUTS[name] for name in model.query_tower.query_inputs())


def _directory_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def _raw_rows(vocabulary, rows, pad):
    """Ragged index rows -> a rectangular array of raw ids padded (right) with ``pad``."""
    raw = [vocabulary.ids(row) for row in rows]
    width = max([len(row) for row in raw] + [1])
    dtype = object if vocabulary.dtype == "string" else np.int64
    out = np.full((len(raw), width), pad, dtype=dtype)
    for i, row in enumerate(raw):
        out[i, :len(row)] = row
    return out


def _request_inputs(inputs, prepared, users, histories, pad):
    features = {}
    if "user_id" in inputs:
        ids = prepared.users.ids(users)
        features["user_id"] = np.asarray(ids, dtype=object if prepared.users.dtype == "string" else np.int64)
    if "history" in inputs:
        features["history"] = _raw_rows(prepared.items, histories, pad)
    return features


def warmup_requests(inputs, prepared, queries, count: int, max_history: int) -> list:
    """``count`` PredictRequests from real users: single-user ``serving_default`` requests,
    batched ones (8, 64, 256 users) and ``top_k_excluding`` requests that exclude the history."""
    pad = PAD_ID[prepared.items.dtype]
    total = len(queries.user)
    rows = [queries.history[i][-max_history:] for i in range(total)]
    plan = [("serving_default", 256), ("serving_default", 64), ("serving_default", 8), ("top_k_excluding", 64)]
    plan = [(name, size) for name, size in plan if size <= total][: max(0, count - 2)]
    singles = max(0, count - len(plan))
    plan += [("top_k_excluding" if i % 4 == 3 else "serving_default", 1) for i in range(singles)]
    requests = []
    for number, (signature, size) in enumerate(plan):
        chosen = [(number * 37 + j) % total for j in range(size)]
        features = _request_inputs(inputs, prepared, queries.user[chosen], [rows[i] for i in chosen], pad)
        if signature == "top_k_excluding":
            features["exclude_item_ids"] = _raw_rows(prepared.items, [rows[i] for i in chosen], pad)
        requests.append(predict_request(features, signature=signature))
    return requests[:count]


@dataclass
class _ExportOptions:
    """The export settings after command-line arguments override ``config.export``."""

    index: str
    k: int
    min_recall: float
    settings: object  # tfsoft.config.ExportConfig with merged ScaNN settings


def _export_options(config: Config, index, k, min_recall, scann: Optional[dict]) -> _ExportOptions:
    options = config.export
    if scann:
        from tfsoft.config import ScannConfig

        try:
            merged = ScannConfig(**{**options.scann.model_dump(), **scann})
        except Exception as error:
            raise ExportError(f"bad ScaNN settings {scann}: {error}") from None
        options = options.model_copy(update={"scann": merged})
    index = index or options.index
    if index not in INDEX_KINDS:
        raise ExportError(f"index must be one of {', '.join(INDEX_KINDS)}; got {index!r}")
    k = options.k if k is None else int(k)
    if k < 1:
        raise ExportError(f"k must be >= 1; got {k}")
    min_recall = options.min_recall if min_recall is None else float(min_recall)
    if not 0.0 <= min_recall <= 1.0:
        raise ExportError(f"min_recall must be in [0, 1]; got {min_recall}")
    return _ExportOptions(index, k, min_recall, options)


@dataclass
class _MeasuredIndex:
    """An index over the catalog with its recall@k measured on real queries."""

    index: object
    recall: float
    tuning: Optional[list]
    queries: object  # the split the queries (and warmup requests) come from
    num_queries: int


def _build_measured_index(run, candidates: np.ndarray, options: _ExportOptions, k: int, allow_low_recall: bool,
                          stream) -> _MeasuredIndex:
    """Build the index, tune ScaNN to the recall floor, and refuse (or warn) below it."""
    prepared, model, settings = run.prepared, run.model, options.settings
    queries = prepared.split.test if len(prepared.split.test.user) else prepared.split.validation
    if len(queries.user) == 0:
        raise ExportError("the run's data has no test or validation queries to measure the index and build "
                          "warmup requests from")
    sample = np.arange(min(len(queries.user), settings.recall_queries))
    history = Ragged.from_rows([queries.history[i] for i in sample])
    query_vectors = model(query_features(queries.user[sample], history, run.max_history)).numpy()

    built = build_index(options.index, candidates, k, ScannParams(**settings.scann.model_dump()))
    tuning = None
    if options.index == "scann" and settings.scann.num_leaves_to_search is None:
        tuning = built.tune(query_vectors, candidates, k, options.min_recall)
    # the tuning ladder already measured the final setting on the same queries
    recall = tuning[-1]["recall"] if tuning else index_recall(built, query_vectors, candidates, k)
    if recall < options.min_recall:
        message = (f"the {options.index} index finds {recall:.4f} of the exact top-{k} on {len(sample)} real "
                   f"queries, below export.min_recall {options.min_recall}")
        if not allow_low_recall:
            raise ExportError(message + "; search more leaves (export.scann.num_leaves_to_search), re-score more "
                                        "candidates (export.scann.reorder_num_neighbors), use --index brute_force, "
                                        "or pass --allow-low-recall")
        print(f"WARNING: {message}; exporting anyway (--allow-low-recall)", file=stream)
    return _MeasuredIndex(built, float(recall), tuning, queries, int(len(sample)))


def _servable(run, measured: _MeasuredIndex, candidates: np.ndarray, inputs, k: int, scratch: Path):
    """The :class:`RetrievalServable` of a run: id assets written into ``scratch``; a query tower
    that reads only the user id is replaced by a precomputed table of every user's vector."""
    prepared, model = run.prepared, run.model
    user_embeddings = None
    if inputs == ("user_id",):
        users = np.arange(prepared.users.num_indices)
        user_embeddings = model(query_features(users, Ragged.from_rows([[]] * len(users)), run.max_history)).numpy()
    user_file = write_id_file(scratch / "user_ids.txt", prepared.users.tokens, prepared.users.dtype)
    item_file = write_id_file(scratch / "item_ids.txt", prepared.items.tokens, prepared.items.dtype)
    return RetrievalServable(
        query_tower=None if user_embeddings is not None else model.query_tower,
        user_embeddings=user_embeddings, index=measured.index, candidate_embeddings=candidates,
        users=IdLookup(user_file, prepared.users.dtype, name="user_ids"),
        items=IdLookup(item_file, prepared.items.dtype, name="item_ids"),
        inputs=inputs, max_history=run.max_history, k=k, score_similarity=model.score_similarity)


def export_run(run_dir, export_dir, *, index: str | None = None, k: int | None = None, version: int | None = None,
               checkpoint: str = "best", min_recall: float | None = None, allow_low_recall: bool = False,
               scann: Optional[dict] = None, stream=None) -> ExportResult:
    """Export a trained run as a new version of a TF Serving model base path (module docstring).

    Args:
        run_dir: a directory written by ``tfsoft train``.
        export_dir: the model base path; ``<export_dir>/<version>/`` is created.
        index: ``brute_force`` or ``scann`` (default: the run config's ``export.index``).
        k: results per query (default ``export.k``; capped at the catalog size).
        version: integer version (default: newest + 1); an existing version is never overwritten.
        checkpoint: ``best`` or ``last``.
        min_recall: recall@k floor of a ScaNN index (default ``export.min_recall``).
        allow_low_recall: publish an index below the floor anyway, with a loud warning.
        scann: overrides of the config's ``export.scann`` settings (e.g. ``{"num_leaves": 100}``);
            setting ``num_leaves_to_search`` turns off its tuning to the recall floor.
        stream: where warnings go (standard error).

    Raises:
        RunError: ``run_dir`` is not a complete run. ExportError: bad options, an existing
        version, or an index below its recall floor.
    """
    from tfsoft.loaded_run import open_run

    started = time.perf_counter()
    run = open_run(run_dir, checkpoint)
    options = _export_options(run.config, index, k, min_recall, scann)
    prepared, model = run.prepared, run.model
    candidates = model.candidate_embeddings().numpy()
    k = min(options.k, prepared.items.num_indices - 1)
    measured = _build_measured_index(run, candidates, options, k, allow_low_recall, stream or sys.stderr)
    inputs = query_inputs(run.config.model)

    with tempfile.TemporaryDirectory(prefix="tfsoft-export-") as scratch, \
            publish_version(export_dir, version) as (staging, version):
        servable = _servable(run, measured, candidates, inputs, k, Path(scratch))
        signatures = servable.signatures()
        tf.saved_model.save(servable, str(staging), signatures=signatures)
        settings = options.settings
        requests = warmup_requests(inputs, prepared, measured.queries, settings.warmup_requests, run.max_history)
        extra = staging / "assets.extra"
        records = write_warmup_requests(extra / WARMUP_FILE, requests)
        _check_staged_model(staging, signatures, requests[:4])
        built = measured.index
        result = ExportResult(
            path=str(Path(export_dir) / str(version)), version=version, index=options.index, k=k,
            inputs=list(inputs), recall=round(measured.recall, 6), recall_queries=measured.num_queries,
            scann=dict(built.params.to_dict(), num_leaves_to_search=built.leaves_to_search,
                       reorder_num_neighbors=built.reorder_num_neighbors, tuning=measured.tuning)
            if options.index == "scann" else None, warmup_records=records,
            size_bytes=0, seconds=0.0, signatures=sorted(signatures))
        metadata = dict(result.to_dict(), run_dir=str(run.paths.root.resolve()), checkpoint=checkpoint,
                        similarity=model.score_similarity, max_history=run.max_history,
                        user_id_dtype=prepared.users.dtype, item_id_dtype=prepared.items.dtype,
                        padding_id=PAD_ID[prepared.items.dtype], num_items=prepared.items.size,
                        num_users=prepared.users.size, tensorflow=tf.__version__,
                        config=json.loads(run.config.model_dump_json()), manifest=MANIFEST_PATH)
        metadata.pop("size_bytes"), metadata.pop("seconds"), metadata.pop("path")
        atomic_write_json(extra / METADATA_FILE, metadata)
        write_export_manifest(staging)  # last: the checksums of every file above
        result.size_bytes = _directory_size(staging)
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _check_staged_model(staging: Path, signatures: dict, requests: list) -> None:
    """Load the staged SavedModel and compare its answers with the in-memory signatures."""
    try:
        loaded = tf.saved_model.load(str(staging))
    except Exception as error:  # pragma: no cover - a TF bug would land here
        raise ExportError(f"the exported SavedModel in '{staging}' does not load: {error}") from error
    for request in requests:
        name = request.model_spec.signature_name
        feed = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        served = loaded.signatures[name](**{key: tf.constant(value) for key, value in feed.items()})
        expected = signatures[name](**{key: tf.constant(value) for key, value in feed.items()})
        if not np.array_equal(served["item_ids"].numpy(), expected["item_ids"].numpy()):
            raise ExportError(f"the reloaded SavedModel answers '{name}' differently from the trained model")
