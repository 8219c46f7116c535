"""``tfsoft retrieve --runner beam``: the batch job as an Apache Beam pipeline, beyond one machine.

The same reading, rejects, unknown-user policy and signature call as the in-process job
(:mod:`tfsoft.batch.job`), distributed by Beam (DirectRunner in tests; DataflowRunner,
FlinkRunner or SparkRunner through the usual pipeline options)::

    input files ─ ReadRows (pyarrow, rows -> QueryRows + rejects; per file) ─┬─ known users ──> RunInference(
                                                                             │   KeyedModelHandler(SavedModelHandler))
                                                                             ├─ unknown users ─> popular items | none
                                                                             └─ rejects ──────> _rejects/*.parquet
    results ─> WriteToParquet(OUT/_beam/part) ─> renamed to OUT/part-beam-*.parquet ─> _SUCCESS

Why a handler of ours: Beam's TensorFlow handler (``apache_beam.ml.inference.tensorflow_inference``)
loads with ``tf.keras.models.load_model`` and calls ``model(batch)``, which fails on our
``tf.saved_model`` exports under TF 2.20 (Keras 3 refuses the format; with legacy Keras the
loaded object is not callable; Beam issue #30616). :class:`SavedModelHandler` loads with
``tf.saved_model.load`` after ``import scann`` and calls the named signature
(:class:`tfsoft.batch.runner.SignatureRunner`), string ids included. ``max_batch_size`` sets
Beam's batching; ``large_model`` shares one loaded model between the worker's processes
(``share_model_across_processes``) and ``model_copies`` sets how many copies a worker holds.

Beam's file sink writes into a temporary directory and renames on success; the results land
under ``OUT/_beam/`` (hidden from Parquet dataset readers) and are moved to ``OUT/`` only
after the pipeline succeeded, then ``_SUCCESS`` is written (counts from Beam metrics). A failed
or killed pipeline therefore leaves no visible result file; rerunning it redoes the whole job
(Beam retries failed bundles itself). Paths are local or shared file systems.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from tfsoft.batch.job import PAD, RetrieveOptions, RetrieveSummary, plan_job
from tfsoft.batch.manifest import COUNTS, read_json, shard_manifest
from tfsoft.batch.output import REJECTS_DIR, SUCCESS, OutputError, result_schema
from tfsoft.batch.rows import REJECT_SCHEMA, QueryRows, parse_batch
from tfsoft.errors import ConfigError
from tfsoft.files import atomic_write_json

NAMESPACE = "tfsoft.batch"
STAGING = "_beam"

try:  # Beam is an extra (tfsoft[beam]); the module imports without it
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult
except ImportError:  # pragma: no cover - exercised only without the extra
    beam = None
    ModelHandler, PredictionResult = object, None


def _require_beam() -> None:
    if beam is None:
        raise ConfigError("--runner beam needs Apache Beam: pip install 'tfsoft[beam]' (apache-beam 2.77, protobuf < 7, "
                          "in the same install as tfsoft)")


def _rows(examples: Sequence[dict], with_history: bool, user_dtype: str, item_dtype: str) -> QueryRows:
    users = np.asarray([e["user_id"] for e in examples], dtype=np.int64 if user_dtype == "int64" else object)
    if not with_history:
        return QueryRows("", np.zeros(len(examples), np.int64), users)
    lengths = [len(e["history"]) for e in examples]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = [item for e in examples for item in e["history"]]
    values = np.asarray(values, dtype=np.int64 if item_dtype == "int64" else object)
    return QueryRows("", np.zeros(len(examples), np.int64), users, values, offsets)


class SavedModelHandler(ModelHandler):
    """A Beam ``ModelHandler`` for tfsoft exports (module docstring).

    Elements are dicts ``{"user_id": id, "history": [ids]}`` (``history`` when the signature
    reads it); each inference is ``(item_ids list, scores list)``.

    Args:
        version_dir: the exported version directory.
        signature: ``serving_default`` or ``top_k_excluding``.
        k: results kept per user.
        user_dtype, item_dtype: the export's raw id dtypes.
        min_batch_size, max_batch_size: Beam's batching of elements per model call.
        large_model: share one loaded model across a worker's processes.
        model_copies: copies of the model per worker (implies sharing).
    """

    def __init__(self, version_dir: str, signature: str, k: int, user_dtype: str, item_dtype: str, *,
                 min_batch_size: int = 1, max_batch_size: int = 1024, large_model: bool = False,
                 model_copies: Optional[int] = None):
        if beam is not None:
            super().__init__()
        self._path, self._signature, self._k = str(version_dir), signature, int(k)
        self._user_dtype, self._item_dtype = user_dtype, item_dtype
        self._batching = {"min_batch_size": int(min_batch_size), "max_batch_size": int(max_batch_size)}
        self._large_model, self._model_copies = bool(large_model or model_copies), model_copies

    def load_model(self):
        from tfsoft.batch.runner import SignatureRunner

        return SignatureRunner(self._path, self._signature)  # imports scann first

    def run_inference(self, batch: Sequence[dict], model, inference_args: Optional[dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        from tfsoft.batch.runner import query_features

        needs_history = any(name in ("history", "exclude_item_ids") for name in model.inputs)
        rows = _rows(batch, needs_history, self._user_dtype, self._item_dtype)
        lists = model.top_k(query_features(rows, model.inputs, PAD[self._item_dtype]), self._k)
        decode = self._item_dtype == "string"
        out = []
        for i, example in enumerate(batch):
            items, scores = lists.row(i)
            if decode:
                items = [item.decode("utf-8") if isinstance(item, bytes) else item for item in items]
            out.append(PredictionResult(example, (items, scores), self._path))
        return out

    def batch_elements_kwargs(self):
        return dict(self._batching)

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def model_copies(self) -> int:
        return self._model_copies or 1

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        return sum(8 + 8 * len(example.get("history", ())) for example in batch)


class ReadRows(beam.DoFn if beam is not None else object):
    """One input file -> known users (main output), unknown users and rejects (tagged outputs)."""

    def __init__(self, version_dir: str, inputs: tuple, user_column: str, history_column: Optional[str],
                 user_dtype: str, item_dtype: str, batch_rows: int):
        self.args = (version_dir, inputs, user_column, history_column, user_dtype, item_dtype, batch_rows)

    def setup(self):
        from tfsoft.batch.vocabulary import ExportVocabulary

        version_dir, _, _, _, user_dtype, item_dtype, _ = self.args
        self.vocabulary = ExportVocabulary.load(version_dir, user_dtype, item_dtype)
        self.counters = {name: beam.metrics.Metrics.counter(NAMESPACE, name)
                         for name in ("users_read", "users_unknown", "rows_rejected")}

    def process(self, path: str):
        from tfsoft.batch.reader import read_batches

        _, inputs, user_column, history_column, user_dtype, item_dtype, batch_rows = self.args
        columns = [user_column] + ([history_column] if history_column else [])
        for raw in read_batches([Path(path)], columns, batch_rows):
            rows, rejects = parse_batch(raw, user_column=user_column, history_column=history_column,
                                        user_dtype=user_dtype, item_dtype=item_dtype)
            self.counters["users_read"].inc(len(rows) + rejects.num_rows)
            self.counters["rows_rejected"].inc(rejects.num_rows)
            for record in rejects.to_pylist():
                yield beam.pvalue.TaggedOutput("rejects", record)
            known = np.zeros(len(rows), dtype=bool)
            if "user_id" in inputs:
                known |= self.vocabulary.known_users(rows.users)
            if "history" in inputs and rows.history_offsets is not None:
                known |= self.vocabulary.known_histories(rows.history_values, rows.history_offsets)
            self.counters["users_unknown"].inc(int((~known).sum()))
            for i in range(len(rows)):
                example = {"user_id": rows.users[i].item() if user_dtype == "int64" else rows.users[i]}
                if rows.history_offsets is not None:
                    example["history"] = rows.history_values[rows.history_offsets[i]:rows.history_offsets[i + 1]].tolist()
                if known[i]:
                    yield example["user_id"], example
                else:
                    yield beam.pvalue.TaggedOutput("unknown", example)


def _model_record(keyed, model: str, version: int) -> dict:
    user, result = keyed
    items, scores = result.inference
    return {"user_id": user, "item_ids": list(items), "scores": [float(s) for s in scores], "model": model,
            "model_version": version, "source": "model"}


class PopularRecord:
    """Unknown user -> the most popular items (scores null), as the in-process job."""

    def __init__(self, version_dir: str, user_dtype: str, item_dtype: str, k: int, exclude_seen: bool,
                 model: str, version: int):
        self.args = (version_dir, user_dtype, item_dtype)
        self.k, self.exclude_seen, self.model, self.version = k, exclude_seen, model, version
        self.vocabulary = None

    def __call__(self, example: dict) -> dict:
        if self.vocabulary is None:
            from tfsoft.batch.vocabulary import ExportVocabulary

            self.vocabulary = ExportVocabulary.load(*self.args)
        exclude = example.get("history", []) if self.exclude_seen else []
        return {"user_id": example["user_id"], "item_ids": self.vocabulary.popular(self.k, exclude), "scores": None,
                "model": self.model, "model_version": self.version, "source": "popular"}


def build_pipeline(pipeline, plan, options: RetrieveOptions, staging: Path, *, max_batch_size: Optional[int] = None,
                   large_model: bool = False, model_copies: Optional[int] = None):
    """Add the retrieval transforms to ``pipeline`` (module docstring); results go under ``staging``."""
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

    info = plan.info
    handler = SavedModelHandler(str(info.path), plan.signature, plan.k, info.user_dtype, info.item_dtype,
                                max_batch_size=max_batch_size or options.batch_size, large_model=large_model,
                                model_copies=model_copies)
    read = (pipeline
            | "InputFiles" >> beam.Create([str(path) for path in plan.files])
            | "ReadRows" >> beam.ParDo(ReadRows(str(info.path), info.inputs, plan.user_column, plan.history_column,
                                                info.user_dtype, info.item_dtype, options.batch_size))
            .with_outputs("rejects", "unknown", main="known"))
    results = [read.known
               | "RunInference" >> RunInference(KeyedModelHandler(handler))
               | "ModelRecords" >> beam.Map(_model_record, info.name, info.version)]
    if options.unknown_users == "popular":
        results.append(read.unknown | "PopularRecords" >> beam.Map(
            PopularRecord(str(info.path), info.user_dtype, info.item_dtype, plan.k, options.exclude_seen,
                          info.name, info.version)))
    schema = result_schema(info.user_dtype, info.item_dtype)
    (results | "AllResults" >> beam.Flatten()
     | "WriteResults" >> beam.io.WriteToParquet(str(staging / "part"), schema, file_name_suffix=".parquet",
                                                codec="zstd"))
    (read.rejects | "WriteRejects" >> beam.io.WriteToParquet(str(staging / "rejects"), REJECT_SCHEMA,
                                                             file_name_suffix=".parquet", codec="zstd"))


def run_beam(options: RetrieveOptions, pipeline_args: Sequence[str] = (), *, max_batch_size: Optional[int] = None,
             large_model: bool = False, model_copies: Optional[int] = None) -> RetrieveSummary:
    """Run the job on Beam (module docstring); ``pipeline_args`` are Beam's options
    (default ``--runner=DirectRunner``)."""
    _require_beam()
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    if options.shard.count != 1:
        raise ConfigError("--shard is for --runner local; Beam distributes the work itself")
    started = time.perf_counter()
    plan = plan_job(options)
    out = Path(options.output)
    if out.is_dir() and next(out.glob("part-[0-9]*.parquet"), None) is not None:
        raise OutputError(f"'{out}' holds the output of a --runner local job; write to another --output (one "
                          f"output directory takes one runner's parts)")
    finished = read_json(out / SUCCESS)
    if finished is not None and not options.overwrite:
        if finished.get("job") != plan.job:
            raise OutputError(f"'{out}' holds a finished output of another job; use a new --output or --overwrite")
        return RetrieveSummary(str(out), "beam", finished["counts"], 0, len(finished["parts"]), True, True,
                               time.perf_counter() - started)
    if options.overwrite or out.exists():
        _remove_beam_output(out)
    staging = out / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    args = list(pipeline_args) or ["--runner=DirectRunner"]
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    build_pipeline(pipeline, plan, options, staging, max_batch_size=max_batch_size, large_model=large_model,
                   model_copies=model_copies)
    result = pipeline.run()
    result.wait_until_finish()
    counts = {name: 0 for name in COUNTS}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counts[counter.key.metric.name] += counter.committed or 0
    parts, rejects = _publish(out, staging)
    counts["users_written"] = counts["users_read"] - counts["rows_rejected"] - (
        counts["users_unknown"] if options.unknown_users == "skip" else 0)
    seconds = time.perf_counter() - started
    from tfsoft.batch.sharding import ShardSpec

    manifest = shard_manifest(plan.job, ShardSpec(), plan.description, counts, parts, rejects, seconds)
    manifest["runner"] = args
    atomic_write_json(out / SUCCESS, {key: value for key, value in manifest.items() if key not in ("shard", "seconds")})
    return RetrieveSummary(str(out), "beam", counts, len(parts), 0, False, True, seconds)


def _publish(out: Path, staging: Path) -> tuple[list, list]:
    """Move the pipeline's files from ``staging`` into place; returns (part names, reject names)."""
    parts, rejects = [], []
    (out / REJECTS_DIR).mkdir(exist_ok=True)
    for path in sorted(staging.glob("part-*.parquet")):
        name = f"part-beam-{path.name[len('part-'):]}"
        path.rename(out / name)
        parts.append(name)
    for path in sorted(staging.glob("rejects-*.parquet")):
        if pq.read_metadata(path).num_rows == 0:  # the sink writes a file even for no rejects
            continue
        name = f"part-beam-{path.name[len('rejects-'):]}"
        path.rename(out / REJECTS_DIR / name)
        rejects.append(f"{REJECTS_DIR}/{name}")
    shutil.rmtree(staging, ignore_errors=True)
    return parts, rejects


def _remove_beam_output(out: Path) -> None:
    shutil.rmtree(out / STAGING, ignore_errors=True)
    for directory in (out, out / REJECTS_DIR):
        if directory.is_dir():
            for entry in directory.glob("part-beam-*.parquet"):
                entry.unlink()
    (out / SUCCESS).unlink(missing_ok=True)
