"""The input of a batch job: files found, columns checked, rows streamed in batches with pyarrow.

``--input`` is a file, a directory (every ``*.parquet`` / ``*.csv`` file under it, sorted; names
starting with ``.`` or ``_`` are skipped, as pyarrow datasets do) or a glob. Parquet files are
read with :meth:`pyarrow.parquet.ParquetFile.iter_batches`, CSV files with
:func:`pyarrow.csv.open_csv` (every needed column as text, parsed by :mod:`tfsoft.batch.rows`
so that one bad value is one rejected row, not a failed file); only the needed columns are
read and never more than one batch of rows per file is held. Rows are numbered from 1 (the
first data row) within each file; a CSV row with the wrong number of fields is handed over as
a rejected row with its number, not an error.

Example:
    >>> files = resolve_input("users/*.parquet")                                  # doctest: +SKIP
    >>> check_columns(files, ["user_id", "history"])                              # doctest: +SKIP
    >>> for batch in read_batches(files, ["user_id", "history"], 4096): ...      # doctest: +SKIP
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from tfsoft.errors import DataError
from tfsoft.files import file_sha256

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class RawBatch:
    """Rows of one input file as read: ``table`` holds the needed columns of rows ``rows`` (1-based,
    in file order); ``broken`` lists CSV rows that could not be split into fields: (row, text)."""

    file: Path
    rows: "object"  # np.ndarray [N] int64
    table: pa.Table
    broken: list = field(default_factory=list)


def _format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def resolve_input(spec: str | Path) -> list[Path]:
    """The input files of ``--input`` (module docstring), sorted; all of one format."""
    text = str(spec)
    path = Path(text)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(entry for entry in path.rglob("*") if entry.is_file() and _format(entry)
                       and not any(part.startswith((".", "_")) for part in entry.relative_to(path).parts))
    else:
        files = sorted(Path(match) for match in glob.glob(text, recursive=True) if Path(match).is_file())
    if not files:
        raise DataError(f"--input '{text}' matches no file (give a Parquet or CSV file, a directory of them or a glob)")
    unknown = [str(f) for f in files if _format(f) is None]
    if unknown:
        raise DataError(f"--input '{text}': cannot tell the format of {', '.join(unknown[:3])}; "
                        f"expected file names ending in {', '.join(FORMATS)}")
    formats = {_format(f) for f in files}
    if len(formats) > 1:
        raise DataError(f"--input '{text}' mixes formats ({', '.join(sorted(formats))}); give one kind of file")
    return files


def file_columns(path: Path) -> list[str]:
    """The column names of one input file (its Parquet schema or CSV header), without reading rows."""
    import csv

    import pyarrow.parquet as pq

    try:
        if _format(path) == "parquet":
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8") as handle:  # the header only, as pyarrow reads it
            return next(csv.reader(handle), [])
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read input file '{path}': {error}") from None


def check_columns(files: Sequence[Path], needed: Sequence[str], hint: str = "") -> None:
    """Raise :class:`DataError` naming the first file that lacks a needed column, with the columns
    found and expected (checked on every file before any output is written)."""
    for path in files:
        found = file_columns(path)
        missing = [name for name in needed if name not in found]
        if missing:
            raise DataError(f"input file '{path}' has no column {', '.join(repr(m) for m in missing)}; "
                            f"found: {', '.join(found) or '(none)'}; expected: {', '.join(needed)}{hint}")


def input_fingerprint(files: Sequence[Path], root: str | Path | None = None) -> str:
    """SHA-256 over each input file's name (relative to ``root``), size and content hash: equal
    fingerprints mean the same input, wherever it was copied."""
    digest = hashlib.sha256()
    for path in files:
        sha, size = file_sha256(path)
        name = Path(path).name if root is None else Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        digest.update(f"{name}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()


def _parquet_batches(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator[RawBatch]:
    import numpy as np
    import pyarrow.parquet as pq

    start = 1
    with pq.ParquetFile(path) as handle:
        for batch in handle.iter_batches(batch_size=batch_rows, columns=list(columns), use_threads=False):
            table = pa.Table.from_batches([batch])
            yield RawBatch(path, np.arange(start, start + table.num_rows, dtype=np.int64), table)
            start += table.num_rows


def _csv_batches(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator[RawBatch]:
    import numpy as np
    import pyarrow.csv as pv

    broken: list = []  # (physical row number, text) of rows with the wrong number of fields

    def keep_going(row) -> str:
        broken.append((row.number, row.text))
        return "skip"

    read = pv.ReadOptions(block_size=max(1 << 16, batch_rows * 64), use_threads=False)
    convert = pv.ConvertOptions(include_columns=list(columns), column_types={name: pa.string() for name in columns},
                                strings_can_be_null=False, quoted_strings_can_be_null=False)
    next_row, reported = 1, 0
    with pv.open_csv(path, read_options=read, parse_options=pv.ParseOptions(invalid_row_handler=keep_going),
                     convert_options=convert) as reader:
        for batch in reader:
            # rows skipped so far (pyarrow counts lines from 1 = header) shift the data row numbers
            skipped = sorted(number - 1 for number, _ in broken if number is not None)
            rows, taken = np.empty(batch.num_rows, np.int64), 0
            skip = set(skipped)
            while taken < batch.num_rows:
                if next_row not in skip:
                    rows[taken] = next_row
                    taken += 1
                next_row += 1
            here = [(number - 1, text) for number, text in broken[reported:] if number is not None
                    and number - 1 < next_row]
            reported += len(here)
            yield RawBatch(path, rows, pa.Table.from_batches([batch]), here)
    rest = [(number - 1 if number is not None else None, text) for number, text in broken[reported:]]
    if rest:
        yield RawBatch(path, np.empty(0, np.int64), pa.table({name: pa.array([], pa.string()) for name in columns}),
                       rest)


def read_batches(files: Sequence[Path], columns: Sequence[str], batch_rows: int) -> Iterator[RawBatch]:
    """Batches of at most ``batch_rows`` rows of the needed ``columns``, file after file, in file order."""
    for path in files:
        reader = _parquet_batches if _format(path) == "parquet" else _csv_batches
        try:
            yield from reader(path, columns, batch_rows)
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"cannot read input file '{path}': {error}") from None
