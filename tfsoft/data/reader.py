"""Read and validate interaction logs from CSV, Parquet or a pandas DataFrame.

The result is one canonical DataFrame, whatever the input looked like:

=============  ==========================================================================
column         meaning
=============  ==========================================================================
``user``       raw user id (int64 when every id is a canonical integer, else string)
``item``       raw item id (same rule)
``timestamp``  float64 seconds, only when a time column was named
``weight``     float64 rating or weight, only when a weight column was named
``position``   int64 row number in the source (0-based): the time order when there is no
               timestamp, and the tie-breaker when timestamps are equal
features       any extra user/item feature columns, under their own names
=============  ==========================================================================

Rows are ordered by user (first appearance) and then by time. Every problem with the input
raises :class:`tfsoft.errors.DataError` naming the file, the column and the first bad row.
Rows are counted from 1 (the first data row); ``line`` is the line in a text file with the
header on line 1.

Text files are UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). An id is
missing only when its cell is empty: ``NA``, ``null``, ``None`` or ``nan`` in an id column
are ids like any other (pandas' NA guessing applies to the other columns only). An id column
must hold one scalar id (int or string) per row; a Parquet column of lists is refused.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfsoft.errors import DataError

CANONICAL_COLUMNS = ("user", "item", "timestamp", "weight", "position")
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")
_INTEGER_ID = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the CSV parser ends a line on (not str.splitlines' \x85, \u2028, ...)
_INT64_LIMIT = 2 ** 63
try:  # the strings pandas reads as NA by default ("", "NA", "null", "nan", ...)
    from pandas._libs.parsers import STR_NA_VALUES as _DEFAULT_NA
except ImportError:  # pragma: no cover - a pandas without it
    _DEFAULT_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                   "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


@dataclass(frozen=True)
class ColumnSpec:
    """Names of the columns to read from an interactions source.

    Args:
        user: column holding the user (or session) id.
        item: column holding the item id.
        time: optional column with the event time (numbers, e.g. Unix seconds, or ISO-8601
            dates). Without it, file order within a user is time order.
        weight: optional column with a rating or weight (numeric, finite, >= 0).
        user_features: extra per-user feature columns to carry along.
        item_features: extra per-item feature columns to carry along.
    """

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None
    weight: str | None = None
    user_features: tuple[str, ...] = field(default_factory=tuple)
    item_features: tuple[str, ...] = field(default_factory=tuple)

    def required(self) -> list[str]:
        """All column names this spec reads, in a stable order."""
        names = [self.user, self.item]
        names += [name for name in (self.time, self.weight) if name]
        names += list(self.user_features) + list(self.item_features)
        return names


def read_interactions(
    source: str | os.PathLike | pd.DataFrame,
    columns: ColumnSpec = ColumnSpec(),
    *,
    delimiter: str | None = None,
) -> pd.DataFrame:
    """Read an interactions CSV/TSV/Parquet file (or DataFrame) into the canonical form.

    Args:
        source: a path ending in ``.csv``, ``.tsv``, ``.txt``, ``.inter`` (RecBole atomic
            file; ``name:type`` headers are understood) or ``.parquet``/``.pq``, or a DataFrame.
        columns: which columns hold the user, item, time, weight and features.
        delimiter: field separator of a text file; guessed from the header when omitted.

    Returns:
        The canonical DataFrame described in the module docstring.

    Raises:
        DataError: the file is missing, empty or malformed; a column is missing; an id is
            null; a timestamp or weight is not numeric.
    """
    if isinstance(source, pd.DataFrame):
        frame, where = source.copy(), "DataFrame"
        _check_duplicate_names(list(map(str, frame.columns)), where)
        frame.columns = [str(name) for name in frame.columns]
        line_offset = None
    else:
        path = Path(source)
        where = f"file '{path}'"
        frame = _read_file(path, delimiter, columns)
        parquet = path.suffix.lower() in (".parquet", ".pq")
        line_offset = None if parquet else 2
        if parquet:
            _check_scalar_ids(frame, columns, where, _parquet_types(path))
    return _canonicalise(frame, columns, where, line_offset)


def _read_file(path: Path, delimiter: str | None, columns: ColumnSpec) -> pd.DataFrame:
    where = f"file '{path}'"
    if not path.exists():
        raise DataError(f"interactions {where} does not exist")
    if path.is_dir():
        raise DataError(f"interactions {where} is a directory, expected a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"interactions {where} is empty (0 bytes)")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises many types
            raise DataError(f"cannot read Parquet {where}: {error}") from error
        _check_duplicate_names(list(map(str, frame.columns)), where)
        if frame.empty:
            raise DataError(f"interactions {where} has no rows")
        return frame
    return _read_text(path, delimiter, columns)


def _read_text(path: Path, delimiter: str | None, columns: ColumnSpec) -> pd.DataFrame:
    where = f"file '{path}'"
    # utf-8-sig: a leading byte-order mark (Excel's "CSV UTF-8") is dropped, not read into the first name
    with open(path, encoding="utf-8-sig", errors="strict", newline="") as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as error:
            raise DataError(f"{where} is not UTF-8 text: {error}") from error
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":  # the final line break ends the last line, it does not start one
        lines.pop()
    header_line = lines[0] if lines else ""
    if not header_line.strip():
        raise DataError(f"interactions {where} has an empty header line (line 1)")
    if delimiter is None:
        delimiter = _guess_delimiter(path, header_line)
    try:
        header = next(csv.reader([header_line], delimiter=delimiter))
    except csv.Error as error:  # e.g. a name longer than the csv module's field limit (128 KiB)
        raise DataError(f"cannot parse the header (line 1) of {where}: {error}") from error
    recbole = all(":" in name for name in header)
    names = [name.split(":", 1)[0].strip() if recbole else name.strip() for name in header]
    _check_duplicate_names(names, where)
    if len(names) == 1:
        others = [d for d in _CANDIDATE_DELIMITERS if d != delimiter and d in header_line]
        if others:
            raise DataError(
                f"{where} was read as {delimiter!r}-separated but its header has one column "
                f"{header_line!r}; it looks {others[0]!r}-separated: pass delimiter={others[0]!r}"
            )
    if len(lines) < 2 or not any(line.strip() for line in lines[1:]):
        raise DataError(f"interactions {where} has a header but no data rows")
    id_columns = {columns.user, columns.item}
    # Only an empty cell is a missing id ("NA", "null", "None", "nan" are real ids); the other
    # columns keep pandas' default NA spellings.
    na_values = {name: [""] if name in id_columns else list(_DEFAULT_NA) for name in names}
    try:
        with warnings.catch_warnings():
            # index_col=False: a first data row longer than the header is an error, not an implicit
            # index that shifts every column one place to the right (pandas warns, then drops fields)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                sep=delimiter,
                header=0,
                names=names,
                index_col=False,
                dtype={name: str for name in names if name in id_columns},
                keep_default_na=False,
                na_values=na_values,
                skip_blank_lines=False,
                engine="c",
            )
    except pd.errors.ParserError as error:
        raise DataError(f"cannot parse {where} as {delimiter!r}-separated text: {error}") from error
    except pd.errors.ParserWarning:
        raise DataError(
            f"cannot parse {where} as {delimiter!r}-separated text: a data row has more fields than the "
            f"{len(names)} columns of the header ({', '.join(names)}); quote fields that hold {delimiter!r}, "
            f"and end lines without one"
        ) from None
    repeated = frame.index[(frame.astype(str).values == np.array(names, dtype=object)).all(axis=1)]
    if len(repeated):
        row = int(repeated[0]) + 1
        raise DataError(
            f"{where} repeats its header at row {row} (line {row + 1}); "
            "were several files concatenated? Remove the repeated header lines"
        )
    blank = frame.index[frame.isna().all(axis=1)]
    if len(blank):
        row = int(blank[0]) + 1
        raise DataError(f"{where} has an empty line at row {row} (line {row + 1})")
    return frame


def _parquet_types(path: Path) -> dict[str, str]:
    """Column name -> Parquet (Arrow) type, e.g. ``list<element: int64>``; empty when unknown."""
    try:
        import pyarrow.parquet as pq

        return {field.name: str(field.type) for field in pq.read_schema(path)}
    except Exception:  # only used to word an error message
        return {}


_NON_SCALAR = (list, tuple, set, frozenset, dict, np.ndarray)


def _check_scalar_ids(frame: pd.DataFrame, columns: ColumnSpec, where: str, types: dict[str, str]) -> None:
    """Each id column holds one scalar id per row, not lists (a Parquet ``list<...>`` column).

    Raises:
        DataError: naming the column, its type, the first row holding a list and what is expected.
    """
    for name in (columns.user, columns.item):
        if name not in frame.columns or frame[name].dtype != object:
            continue
        values = frame[name]
        bad = values.map(lambda value: isinstance(value, _NON_SCALAR)).to_numpy(dtype=bool)
        if not bad.any():
            continue
        row, count = _first_bad(bad)
        value = values.iloc[row]
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        kind = "mappings" if isinstance(value, dict) else "lists"
        typed = f"Parquet type {types[name]}" if name in types else f"Python type {type(value).__name__}"
        more = f" ({count} such rows)" if count > 1 else ""
        advice = (f"write one row per interaction (e.g. DataFrame.explode({name!r}))" if kind == "lists"
                  else "store the id field as its own column")
        raise DataError(
            f"column {name!r} of {where} holds {kind} ({typed}), not ids: row {row + 1} has {shown!r}{more}; "
            f"expected one scalar id per row (int or string): {advice}, or name another column"
        )


def _guess_delimiter(path: Path, header_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".inter", ".item", ".user"):
        return "\t"
    counts = {d: header_line.count(d) for d in _CANDIDATE_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _check_duplicate_names(names: list[str], where: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise DataError(
                f"column {name!r} appears twice in the header of {where} "
                f"(columns {seen[name]} and {position}); column names must be unique"
            )
        seen[name] = position


def _row_label(index: int, line_offset: int | None) -> str:
    if line_offset is None:
        return f"row {index + 1}"
    return f"row {index + 1} (line {index + line_offset})"


def _canonicalise(
    frame: pd.DataFrame, columns: ColumnSpec, where: str, line_offset: int | None
) -> pd.DataFrame:
    if frame.empty:
        raise DataError(f"interactions {where} has no rows")
    missing = [name for name in columns.required() if name not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns))
        raise DataError(
            f"column {missing[0]!r} missing from {where}; found: {found}"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    clash = [
        name
        for name in list(columns.user_features) + list(columns.item_features)
        if name in CANONICAL_COLUMNS
    ]
    if clash:
        raise DataError(f"feature column {clash[0]!r} of {where} clashes with a reserved column name")
    frame = frame.reset_index(drop=True)
    _check_scalar_ids(frame, columns, where, {})
    out = pd.DataFrame(
        {
            "user": _ids(frame[columns.user], columns.user, where, line_offset),
            "item": _ids(frame[columns.item], columns.item, where, line_offset),
        }
    )
    if columns.time:
        out["timestamp"] = _timestamps(frame[columns.time], columns.time, where, line_offset)
    if columns.weight:
        out["weight"] = _weights(frame[columns.weight], columns.weight, where, line_offset)
    out["position"] = np.arange(len(frame), dtype=np.int64)
    for name in list(columns.user_features) + list(columns.item_features):
        values = frame[name]
        # tz-aware datetimes stay an array: as NumPy objects pandas re-parses them, and fails before year 1
        out[name] = values.array if isinstance(values.dtype, pd.DatetimeTZDtype) else values.to_numpy()
    first_seen = pd.factorize(out["user"])[0]
    order_keys = [first_seen] + ([out["timestamp"].to_numpy()] if columns.time else [])
    order = np.lexsort([out["position"].to_numpy()] + order_keys[::-1])
    return out.iloc[order].reset_index(drop=True)


def _show(value) -> str:
    """repr of a cell value without numpy's type wrapper (``-1``, not ``np.int64(-1)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    bad = np.flatnonzero(mask)
    return int(bad[0]), len(bad)


def _ids(values: pd.Series, name: str, where: str, line_offset: int | None) -> pd.Series:
    """Ids as int64 when every id is a canonical integer, else as strings."""
    try:
        as_text = values.astype(str).str.strip()
    except UnicodeDecodeError as error:  # a Parquet binary column
        raise DataError(f"column {name!r} of {where} holds binary values that are not UTF-8 text: {error}") from None
    null = values.isna().to_numpy() | (as_text == "").to_numpy()
    if null.any():
        row, count = _first_bad(null)
        more = f" (and {count - 1} more rows)" if count > 1 else ""
        raise DataError(
            f"column {name!r} of {where} has an empty id at {_row_label(row, line_offset)}{more}"
        )
    if pd.api.types.is_integer_dtype(values.dtype):
        if values.dtype.kind == "u" and values.max() >= _INT64_LIMIT:  # uint64 beyond int64: strings, as in text
            return as_text.astype(object)
        return values.astype(np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        numbers = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            fractional = ~np.isfinite(numbers) | (numbers != np.floor(numbers))
        if fractional.any():
            row, _ = _first_bad(fractional)
            raise DataError(
                f"column {name!r} of {where} holds non-integer id {_show(values.iloc[row])} at "
                f"{_row_label(row, line_offset)}"
            )
        huge = (numbers >= _INT64_LIMIT) | (numbers < -_INT64_LIMIT)
        if huge.any():
            row, _ = _first_bad(huge)
            raise DataError(
                f"column {name!r} of {where} holds id {_show(values.iloc[row])} at {_row_label(row, line_offset)}, "
                "outside the int64 range; store such ids as integers or strings, not floats"
            )
        return values.astype(np.int64)
    if as_text.str.fullmatch(_INTEGER_ID).all():
        try:
            return as_text.astype(np.int64)
        except OverflowError:
            pass
    return as_text.astype(object)


def _timestamps(values: pd.Series, name: str, where: str, line_offset: int | None) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if values.isna().any():
            row, _ = _first_bad(values.isna().to_numpy())
            raise DataError(f"column {name!r} of {where} has an empty timestamp at {_row_label(row, line_offset)}")
        return _epoch_seconds(values)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna().to_numpy() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if not bad.any():
        return numeric.to_numpy(np.float64)
    if not pd.api.types.is_numeric_dtype(values.dtype) and bad.all():
        parsed = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        if not parsed.isna().any():
            return _epoch_seconds(parsed)
    row, count = _first_bad(bad)
    more = f" (and {count - 1} more rows)" if count > 1 else ""
    raise DataError(
        f"column {name!r} of {where} must hold numeric timestamps (e.g. Unix seconds) or "
        f"ISO-8601 dates; {_row_label(row, line_offset)} has {_show(values.iloc[row])}{more}"
    )


_UNITS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def _epoch_seconds(stamps: pd.Series) -> np.ndarray:
    """Seconds since 1970-01-01 UTC of datetimes without NaT, naive ones read as UTC, in their own
    resolution (pandas keeps s/ms/us: casting to ns overflows past 2262)."""
    utc = pd.to_datetime(stamps, utc=True)
    return (utc.astype("int64") / _UNITS_PER_SECOND[utc.dt.unit]).to_numpy(np.float64)


def _weights(values: pd.Series, name: str, where: str, line_offset: int | None) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numeric) | (numeric < 0)
    if bad.any():
        row, count = _first_bad(bad)
        more = f" (and {count - 1} more rows)" if count > 1 else ""
        raise DataError(
            f"column {name!r} of {where} must hold finite non-negative numbers; "
            f"{_row_label(row, line_offset)} has {_show(values.iloc[row])}{more}"
        )
    return numeric
