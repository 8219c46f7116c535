"""The output directory of a batch job: part files committed one by one, rejects, manifests.

Layout (names starting with ``_`` or ``.`` are skipped by Parquet dataset readers, so
``pyarrow.dataset.dataset(OUT)`` / Spark / BigQuery read only the results)::

    OUT/part-SSSSS-of-NNNNN-PPPPPP.parquet       results of part P of shard S of N
    OUT/_rejects/part-SSSSS-of-NNNNN-PPPPPP.parquet   its rejected rows (when it has some)
    OUT/_shards/SSSSS-of-NNNNN.json              shard S's manifest, once the shard is complete
    OUT/_SUCCESS                                 the job's manifest, once every shard is complete

Results: ``user_id`` (int64 or string, as the export's ids), ``item_ids`` (list of ids, best
first), ``scores`` (list<float32>; null for a ``popular`` fallback), ``model`` (name),
``model_version`` (int64), ``source`` (``model`` or ``popular``), in input order within a part.

**Commit protocol.** A part's rejects, then its results, are each written to a hidden
temporary file in the destination directory and renamed into place (:func:`tfsoft.files.atomic_output`):
the results file is the commit. Its Parquet key-value metadata (``tfsoft.batch``) records the
job fingerprint and the part's counts, so a restarted job knows which parts are done, and that
they belong to the same job, by reading footers only. A killed job leaves at most hidden
temporaries, which the next run of the same shard removes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tfsoft.errors import TfsoftError
from tfsoft.files import atomic_output

METADATA_KEY = b"tfsoft.batch"
REJECTS_DIR = "_rejects"
SHARDS_DIR = "_shards"
SUCCESS = "_SUCCESS"


class OutputError(TfsoftError):
    """The output directory holds work of another job, or cannot be written."""


def result_schema(user_dtype: str, item_dtype: str) -> pa.Schema:
    """The schema of the result part files (module docstring)."""
    ids = {"int64": pa.int64(), "string": pa.string()}
    return pa.schema([("user_id", ids[user_dtype]), ("item_ids", pa.list_(ids[item_dtype])),
                      ("scores", pa.list_(pa.float32())), ("model", pa.string()), ("model_version", pa.int64()),
                      ("source", pa.string())])


def part_name(label: str, part: int) -> str:
    return f"part-{label}-{part:06d}.parquet"


def _ids_array(values: np.ndarray, dtype: str) -> pa.Array:
    if dtype == "int64":
        return pa.array(np.asarray(values, dtype=np.int64), pa.int64())
    if len(values) and isinstance(values[0], bytes):  # SavedModel string outputs
        return pa.array(values, pa.binary()).cast(pa.string())
    return pa.array(values, pa.string())


def results_table(schema: pa.Schema, users: np.ndarray, item_ids: np.ndarray, scores: Optional[np.ndarray],
                  offsets: np.ndarray, model: str, version: int, source: str) -> pa.Table:
    """Rows of results: user i gets ``item_ids[offsets[i]:offsets[i+1]]`` (and those scores; ``None``
    -> null scores)."""
    user_dtype = "int64" if schema.field("user_id").type == pa.int64() else "string"
    item_dtype = "int64" if schema.field("item_ids").type.value_type == pa.int64() else "string"
    count = len(users)
    offsets = pa.array(np.asarray(offsets, dtype=np.int32), pa.int32())
    items = pa.ListArray.from_arrays(offsets, _ids_array(item_ids, item_dtype))
    if scores is None:
        score_lists = pa.nulls(count, pa.list_(pa.float32()))
    else:
        score_lists = pa.ListArray.from_arrays(offsets, pa.array(np.asarray(scores, np.float32), pa.float32()))
    return pa.Table.from_arrays(
        [_ids_array(users, user_dtype), items, score_lists, pa.array([model] * count, pa.string()),
         pa.array(np.full(count, version, np.int64)), pa.array([source] * count, pa.string())], schema=schema)


def write_parquet(path: Path, table: pa.Table, metadata: Optional[dict] = None) -> None:
    """Write ``table`` to ``path`` (a temporary name: the caller renames it) with ``metadata`` as JSON
    under :data:`METADATA_KEY`."""
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path, compression="zstd")


def commit_part(out: Path, label: str, part: int, results: pa.Table, rejects: pa.Table, metadata: dict) -> Path:
    """Write one part (rejects first, then the results file, which is the commit), each atomically."""
    if rejects.num_rows:
        with atomic_output(out / REJECTS_DIR / part_name(label, part)) as tmp:
            write_parquet(tmp, rejects)
    with atomic_output(out / part_name(label, part)) as tmp:
        write_parquet(tmp, results, metadata)
    return out / part_name(label, part)


@dataclass(frozen=True)
class CommittedPart:
    """A part found on disk: its number, path and the counts recorded in its footer."""

    part: int
    path: Path
    metadata: dict


def part_metadata(path: Path) -> dict:
    """The :data:`METADATA_KEY` metadata of a part file (read from its footer only)."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
        return json.loads(raw) if raw else {}
    except (pa.ArrowException, OSError, ValueError) as error:
        raise OutputError(f"part file '{path}' cannot be read ({error}); remove it or rerun with --overwrite") from None


def committed_parts(out: Path, label: str, job: str) -> dict[int, CommittedPart]:
    """This shard's committed parts, checked to belong to job fingerprint ``job``."""
    pattern = re.compile(rf"^part-{re.escape(label)}-(\d{{6}})\.parquet$")
    found = {}
    if out.is_dir():
        for entry in sorted(out.iterdir()):
            match = pattern.match(entry.name)
            if match:
                metadata = part_metadata(entry)
                if metadata.get("job") != job:
                    raise OutputError(f"'{out}' holds part '{entry.name}' of another job (other input, model or "
                                      f"settings); use a new --output or rerun with --overwrite to replace it")
                found[int(match.group(1))] = CommittedPart(int(match.group(1)), entry, metadata)
    return found


def remove_temporaries(out: Path, label: str) -> list[Path]:
    """Remove the hidden temporaries a killed run of this shard left (``.part-<label>-...``)."""
    removed = []
    for directory in (out, out / REJECTS_DIR):
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name.startswith(f".part-{label}-") and ".tmp" in entry.name:
                    entry.unlink(missing_ok=True)
                    removed.append(entry)
    return removed


def remove_shard(out: Path, label: str) -> None:
    """Delete everything shard ``label`` wrote, and the job manifest (``--overwrite``)."""
    remove_temporaries(out, label)
    for directory in (out, out / REJECTS_DIR):
        if directory.is_dir():
            for entry in directory.glob(f"part-{label}-*.parquet"):
                entry.unlink()
    (out / SHARDS_DIR / f"{label}.json").unlink(missing_ok=True)
    (out / SUCCESS).unlink(missing_ok=True)
