"""``tfsoft retrieve``: top-k for every user of an input, in this process — streamed, sharded, resumable.

Data flows one way, with reading and writing overlapped with the model (three threads)::

    reader thread:  files -> RawBatch (pyarrow) -> QueryRows + rejects -> this shard's rows -> parts of
                    ``part_size`` rows
    main thread:    per part, batches of ``batch_size``: unknown users (policy) | SavedModel signature, on
                    ``model_threads`` threads (an exported ScaNN index searches a batch on one core)
    writer thread:  results + rejects -> part files committed by rename (:mod:`tfsoft.batch.output`)

A part is the ``part_size`` consecutive rows of this shard (rejected rows included) in input
order, so parts depend only on the input, the shard and ``part_size``: a restarted job reads
the input again, skips the parts already committed (their footers say so) and computes the
others, producing the files an uninterrupted run would. When every part is committed the shard
writes its manifest and, if it is the last shard to finish, ``_SUCCESS``
(:mod:`tfsoft.batch.manifest`). A finished output is left alone (a rerun returns at once);
``overwrite`` removes this shard's files first. Another job's output (different input, model or
settings) is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from tfsoft.batch.export_info import ExportInfo, resolve_export
from tfsoft.batch.manifest import COUNTS, finish_shard, read_json, shard_manifest, try_complete
from tfsoft.batch.output import (REJECTS_DIR, SHARDS_DIR, SUCCESS, OutputError, commit_part, committed_parts,
                                 part_name, remove_shard, remove_temporaries, result_schema, results_table)
from tfsoft.batch.reader import check_columns, input_fingerprint, read_batches, resolve_input
from tfsoft.batch.rows import REJECT_SCHEMA, QueryRows, parse_batch
from tfsoft.batch.sharding import ShardSpec, shard_of
from tfsoft.errors import ConfigError

log = logging.getLogger("tfsoft.batch")

UNKNOWN_POLICIES = ("popular", "skip")
PAD = {"int64": -1, "string": ""}


@dataclass
class RetrieveOptions:
    """What ``tfsoft retrieve`` was asked to do (defaults are the command's)."""

    model: str
    input: str
    output: str
    k: Optional[int] = None  # None: the export's k
    exclude_seen: bool = False
    batch_size: int = 1024
    part_size: int = 100_000
    shard: ShardSpec = field(default_factory=ShardSpec)
    signature: Optional[str] = None
    unknown_users: str = "popular"
    user_column: str = "user_id"
    history_column: str = "history"
    overwrite: bool = False
    progress: Optional[bool] = None  # None: a bar on a terminal, else one log line per part
    model_threads: Optional[int] = None  # concurrent model calls; None: the CPU count, at most 4

    def threads(self) -> int:
        return self.model_threads or max(1, min(4, os.cpu_count() or 1))

    def check(self) -> None:
        for name in ("k", "batch_size", "part_size", "model_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.unknown_users not in UNKNOWN_POLICIES:
            raise ConfigError(f"--unknown-users must be one of {', '.join(UNKNOWN_POLICIES)}; got {self.unknown_users!r}")


@dataclass
class RetrieveSummary:
    """What a job did: the counts of this shard, where it wrote, and busy seconds per stage (summed over
    the threads that run it: ``read``, ``model``, ``format``, ``write``)."""

    output: str
    shard: str
    counts: dict
    parts_written: int
    parts_skipped: int
    noop: bool
    complete: bool  # _SUCCESS exists (every shard is done)
    seconds: float
    stages: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class JobPlan:
    """Everything decided before any output is written: the export, input files, columns, fingerprints."""

    info: ExportInfo
    files: list
    user_column: str
    history_column: Optional[str]
    signature: str
    input_fingerprint: str
    job: str
    description: dict
    k: int


def plan_job(options: RetrieveOptions) -> JobPlan:
    """Check the export, the input files and their columns, and fingerprint the job; writes nothing.

    Raises:
        ExportError / DataError / ConfigError naming the file and the columns found and expected.
    """
    from tfsoft.export.manifest import verify_export

    options.check()
    info = resolve_export(options.model)
    verify_export(info.path)  # a damaged version is named before anything loads it
    if options.k is None and not info.k:
        raise ConfigError(f"'{info.path}' does not say how many results it returns per user; give --k")
    k = options.k or info.k
    if info.k and k > info.k:
        raise ConfigError(f"--k {k} is more than the {info.k} results per user of '{info.path}'; ask "
                          f"for --k {info.k} or less, or export again with --k {k}")
    files = resolve_input(options.input)
    reads_history = "history" in info.inputs or options.exclude_seen
    columns = [options.user_column] + ([options.history_column] if reads_history else [])
    why = (f" (the export '{info.path}' reads {', '.join(info.inputs)}"
           + ("; --exclude-seen reads the history" if options.exclude_seen else "")
           + "; name other columns with --user-column / --history-column)")
    check_columns(files, columns, why)
    signature = options.signature or ("top_k_excluding" if options.exclude_seen else "serving_default")
    if info.signatures and signature not in info.signatures:
        raise ConfigError(f"--signature {signature!r} is not a signature of '{info.path}'; found: "
                          f"{', '.join(info.signatures)}")
    common = Path(options.input) if Path(options.input).is_dir() else None
    fingerprint = input_fingerprint(files, common)
    description = {
        "model": {"name": info.name, "version": info.version, "path": str(info.path.resolve()), "index": info.index,
                  "signature": signature, "export_id": _export_id(info.path)},
        "input": {"fingerprint": fingerprint, "files": [str(f) for f in files]},
        "settings": {"k": k, "exclude_seen": options.exclude_seen, "unknown_users": options.unknown_users,
                     "part_size": options.part_size, "columns": columns},
    }
    identity = {"input": fingerprint, "model": description["model"]["export_id"], "version": info.version,
                "settings": description["settings"], "signature": signature, "shards": options.shard.count}
    job = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return JobPlan(info, files, options.user_column, options.history_column if reads_history else None, signature,
                   fingerprint, job, description, k)


def _export_id(version_dir: Path) -> str:
    """SHA-256 of the export's checksum manifest (else of saved_model.pb): which model answered."""
    from tfsoft.export.manifest import MANIFEST_PATH
    from tfsoft.files import file_sha256

    manifest = version_dir / MANIFEST_PATH
    return file_sha256(manifest if manifest.is_file() else version_dir / "saved_model.pb")[0]


@dataclass
class PartInput:
    """The rows of one part: valid query rows (in chunks) and rejected rows."""

    part: int
    chunks: list
    rejects: list
    size: int


def _split(rows: QueryRows, rejects: pa.Table, limit: int):
    """The first ``limit`` rows (valid and rejected, by row number) and the rest."""
    numbers = np.sort(np.concatenate([rows.rows, rejects.column("row").to_numpy(zero_copy_only=False)
                                      .astype(np.int64)]))
    if len(numbers) <= limit:
        return (rows, rejects), None
    threshold = numbers[limit - 1]
    head = np.flatnonzero(rows.rows <= threshold)
    tail = np.flatnonzero(rows.rows > threshold)
    mask = np.asarray(rejects.column("row").to_numpy(zero_copy_only=False) <= threshold)
    return (rows.take(head), rejects.filter(pa.array(mask))), (rows.take(tail), rejects.filter(pa.array(~mask)))


def _in_shard(rows: QueryRows, rejects: pa.Table, shard: ShardSpec, user_dtype: str):
    if shard.count == 1:
        return rows, rejects
    rows = rows.take(np.flatnonzero(shard_of(rows.users, shard.count) == shard.index))
    users = rejects.column("user_id").to_pylist()
    readable = [u is not None for u in users]
    ids = [(int(u) if user_dtype == "int64" else u) for u in users if u is not None]
    owner = np.zeros(len(users), np.int64)  # unreadable user id: shard 0
    owner[np.asarray(readable, bool)] = shard_of(np.asarray(ids, np.int64 if user_dtype == "int64" else object),
                                                 shard.count) if ids else []
    return rows, rejects.filter(pa.array(owner == shard.index))


def iter_parts(plan: JobPlan, options: RetrieveOptions, stats: dict):
    """:class:`PartInput` of this shard, in order (module docstring)."""
    info, shard = plan.info, options.shard
    columns = [plan.user_column] + ([plan.history_column] if plan.history_column else [])
    part, chunks, rejected, size = 0, [], [], 0
    batches = read_batches(plan.files, columns, options.batch_size)
    while True:
        started = time.perf_counter()
        raw = next(batches, None)
        if raw is None:
            break
        rows, rejects = parse_batch(raw, user_column=plan.user_column, history_column=plan.history_column,
                                    user_dtype=info.user_dtype, item_dtype=info.item_dtype)
        stats["rows_in_input"] += raw.table.num_rows + len(raw.broken)
        rows, rejects = _in_shard(rows, rejects, shard, info.user_dtype)
        stats["read"] += time.perf_counter() - started
        pending = (rows, rejects)
        while pending is not None:
            (head_rows, head_rejects), pending = _split(*pending, options.part_size - size)
            chunks.append(head_rows)
            rejected.append(head_rejects)
            size += len(head_rows) + head_rejects.num_rows
            if size == options.part_size:
                yield PartInput(part, chunks, rejected, size)
                part, chunks, rejected, size = part + 1, [], [], 0
    if size or part == 0:
        yield PartInput(part, chunks, rejected, size)


def _prefetch(iterator, depth: int = 2):
    """Run ``iterator`` in a thread, ``depth`` items ahead; its exceptions re-raise here."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():  # a consumer that stopped early never blocks this thread
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer
            put(error)

    thread = threading.Thread(target=produce, name="tfsoft-batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class PartComputer:
    """Results of one part's rows: model answers for known users, the unknown-user policy for the rest."""

    def __init__(self, plan: JobPlan, options: RetrieveOptions):
        from tfsoft.batch.runner import SignatureRunner
        from tfsoft.batch.vocabulary import ExportVocabulary

        info = plan.info
        self.info, self.options, self.k = info, options, plan.k
        self.runner = SignatureRunner(info.path, plan.signature)
        self.vocabulary = ExportVocabulary.load(info.path, info.user_dtype, info.item_dtype)
        self.schema = result_schema(info.user_dtype, info.item_dtype)
        self.pool = ThreadPoolExecutor(max_workers=options.threads(), thread_name_prefix="tfsoft-batch-model")
        self._lock = threading.Lock()
        self.pad = PAD[info.item_dtype]

    def known(self, rows: QueryRows) -> np.ndarray:
        """[N] bool: the model knows something about the row (:mod:`tfsoft.batch.vocabulary`)."""
        known = np.zeros(len(rows), dtype=bool)
        if "user_id" in self.info.inputs:
            known |= self.vocabulary.known_users(rows.users)
        if "history" in self.info.inputs and rows.history_offsets is not None:
            known |= self.vocabulary.known_histories(rows.history_values, rows.history_offsets)
        return known

    def model_table(self, rows: QueryRows, stats: dict) -> pa.Table:
        from tfsoft.batch.runner import query_features

        started = time.perf_counter()
        lists = self.runner.top_k(query_features(rows, self.runner.inputs, self.pad), self.k)
        model_seconds = time.perf_counter() - started
        info = self.info
        started = time.perf_counter()
        table = results_table(self.schema, rows.users, lists.item_ids, lists.scores, lists.offsets, info.name,
                              info.version, "model")
        with self._lock:  # batches run on several threads
            stats["model"] += model_seconds
            stats["format"] += time.perf_counter() - started
        return table

    def popular_table(self, rows: QueryRows) -> pa.Table:
        info, k = self.info, self.k
        if self.options.exclude_seen and rows.history_offsets is not None:
            lists = [self.vocabulary.popular(k, rows.history_values[rows.history_offsets[i]:rows.history_offsets[i + 1]])
                     for i in range(len(rows))]
        else:
            lists = [self.vocabulary.popular(k)] * len(rows)
        offsets = np.concatenate([[0], np.cumsum([len(items) for items in lists])]).astype(np.int64)
        flat = np.asarray([item for items in lists for item in items],
                          dtype=np.int64 if info.item_dtype == "int64" else object)
        return results_table(self.schema, rows.users, flat, None, offsets, info.name, info.version, "popular")

    def _answer(self, rows: QueryRows, stats: dict) -> tuple[list, list, int]:
        """(tables, positions in ``rows``, unknown count) of one batch."""
        known = self.known(rows)
        tables, positions = [], []
        if known.any():
            picked = np.flatnonzero(known)
            tables.append(self.model_table(rows.take(picked), stats))
            positions.append(picked)
        if not known.all() and self.options.unknown_users == "popular":
            picked = np.flatnonzero(~known)
            tables.append(self.popular_table(rows.take(picked)))
            positions.append(picked)
        return tables, positions, int((~known).sum())

    def compute(self, part: PartInput, stats: dict) -> tuple[pa.Table, pa.Table, dict]:
        """(results, rejects, counts) of a part, results in input order. Batches run on
        ``model_threads`` threads: TensorFlow releases the GIL, and an exported ScaNN index searches a
        batch on one core (``search_batched``), so concurrent batches keep every core busy."""
        size = self.options.batch_size
        batches = [chunk.take(np.arange(start, min(start + size, len(chunk))))
                   for chunk in part.chunks for start in range(0, len(chunk), size)]
        tables, positions, counts, order = [], [], {"users_unknown": 0}, 0
        for rows, (batch_tables, batch_positions, unknown) in zip(
                batches, self.pool.map(lambda rows: self._answer(rows, stats), batches)):
            tables += batch_tables
            positions += [order + p for p in batch_positions]
            counts["users_unknown"] += unknown
            order += len(rows)
        if tables:
            results = pa.concat_tables(tables)
            results = results.take(np.argsort(np.concatenate(positions), kind="stable"))
        else:
            results = self.schema.empty_table()
        rejects = pa.concat_tables(part.rejects) if part.rejects else REJECT_SCHEMA.empty_table()
        counts.update(users_read=part.size, users_written=results.num_rows, rows_rejected=rejects.num_rows)
        return results, rejects, counts

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _ShardLock:
    """An exclusive lock on ``_shards/<label>.lock``: two runs of one shard never write together."""

    def __init__(self, out: Path, label: str):
        (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        self.path = out / SHARDS_DIR / f"{label}.lock"
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise OutputError(f"another job is writing shard {label} of '{out}' (it holds '{self.path}')") from None

    def release(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _progress(options: RetrieveOptions, stream):
    show_bar = options.progress if options.progress is not None else bool(getattr(stream, "isatty", lambda: False)())
    if not show_bar:
        return None
    from tqdm import tqdm

    return tqdm(unit=" users", unit_scale=True, file=stream, desc=f"shard {options.shard.index}/{options.shard.count}")


def run_retrieval(options: RetrieveOptions, stream=None) -> RetrieveSummary:
    """Run (or resume, or recognise as done) one shard of a batch retrieval job (module docstring)."""
    stream = stream or sys.stderr
    started = time.perf_counter()
    plan = plan_job(options)
    out, label = Path(options.output), options.shard.label
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output '{out}' exists and is not a directory")
    if out.is_dir() and next(out.glob("part-beam-*.parquet"), None) is not None:
        raise OutputError(f"'{out}' holds the output of a --runner beam job; write to another --output (one "
                          f"output directory takes one runner's parts)")
    finished = read_json(out / SHARDS_DIR / f"{label}.json")
    if finished is not None and not options.overwrite:
        if finished.get("job") != plan.job:
            raise OutputError(f"'{out}' holds a finished output of another job (input fingerprint "
                              f"{finished.get('input', {}).get('fingerprint', '?')[:12]}, model version "
                              f"{finished.get('model', {}).get('version')}); use a new --output or --overwrite")
        complete = try_complete(out, plan.job, options.shard.count, SHARDS_DIR, SUCCESS) is not None
        return RetrieveSummary(str(out), f"{options.shard.index}/{options.shard.count}", finished["counts"], 0,
                               len(finished["parts"]), True, complete, time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    lock = _ShardLock(out, label)
    try:
        if options.overwrite:
            remove_shard(out, label)
        remove_temporaries(out, label)
        done = committed_parts(out, label, plan.job)
        return _run(plan, options, out, label, done, stream, started)
    finally:
        lock.release()


def _run(plan: JobPlan, options: RetrieveOptions, out: Path, label: str, done: dict, stream, started: float):
    # seconds per stage: read (pyarrow + parsing + sharding, reader thread), model (signature calls),
    # format (result tables), write (Parquet parts, writer thread)
    stats = {"read": 0.0, "model": 0.0, "format": 0.0, "write": 0.0, "rows_in_input": 0}
    counts = {name: 0 for name in COUNTS}
    computer = None
    bar = _progress(options, stream)
    written, skipped, parts, rejects_files = 0, 0, [], []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfsoft-batch-writer") as writer:
        pending = None
        for part in _prefetch(iter_parts(plan, options, stats)):
            part_started = time.perf_counter()
            if part.part in done:
                metadata = done[part.part].metadata
                part_counts = metadata["counts"]
                skipped += 1
            else:
                if computer is None:
                    computer = PartComputer(plan, options)  # loads the SavedModel once there is work
                    part_started = time.perf_counter()
                results, rejects, part_counts = computer.compute(part, stats)
                if pending is not None:
                    pending.result()  # at most one write in flight
                metadata = {"job": plan.job, "part": part.part, "counts": part_counts}
                pending = writer.submit(_timed_commit, stats, out, label, part.part, results, rejects, metadata)
                written += 1
            for name in COUNTS:
                counts[name] += part_counts[name]
            parts.append(part_name(label, part.part))
            if part_counts["rows_rejected"]:
                rejects_files.append(f"{REJECTS_DIR}/{part_name(label, part.part)}")
            _report(bar, stream, options, part, part_counts, part.part in done, time.perf_counter() - part_started)
        if pending is not None:
            pending.result()
    if computer is not None:
        computer.close()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    manifest = shard_manifest(plan.job, options.shard, plan.description, counts, parts, rejects_files, seconds)
    manifest["rows_in_input"] = stats["rows_in_input"]
    complete = finish_shard(out, label, manifest, SHARDS_DIR, SUCCESS) is not None
    stages = {name: round(stats[name], 3) for name in ("read", "model", "format", "write")}
    log.info("shard %s of '%s' complete: %s", label, out, counts)
    return RetrieveSummary(str(out), f"{options.shard.index}/{options.shard.count}", counts, written, skipped, False,
                           complete, seconds, stages)


def _timed_commit(stats: dict, out: Path, label: str, part: int, results, rejects, metadata) -> None:
    started = time.perf_counter()
    commit_part(out, label, part, results, rejects, metadata)
    stats["write"] += time.perf_counter() - started


def _report(bar, stream, options, part: PartInput, counts: dict, skipped: bool, seconds: float) -> None:
    if bar is not None:
        bar.update(counts["users_read"])
        return
    rate = f"{counts['users_read'] / seconds:,.0f} users/s" if seconds > 0 and not skipped else "already committed"
    print(f"shard {options.shard.index}/{options.shard.count} part {part.part}: {counts['users_read']} users "
          f"({counts['users_written']} written, {counts['users_unknown']} unknown, {counts['rows_rejected']} "
          f"rejected), {rate}", file=stream, flush=True)
