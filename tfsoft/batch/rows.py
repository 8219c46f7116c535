"""Raw input rows -> valid query rows and rejected rows (row number + reason), never an exception.

A batch job must not stop at its millionth user because one row is bad: every row of a
:class:`~tfsoft.batch.reader.RawBatch` either becomes a query row or a reject::

    rejects: file (string), row (int64, 1 = first data row), column (string), reason (string),
             value (string, the raw text, cut to 200 characters),
             user_id (string: the row's user id when it was readable, else null)

Rules, for the raw id dtype of the export (``int64`` or ``string``):

* user id: missing (null, empty text), or for ``int64`` not an integer in the int64 range
  -> rejected. A numeric column feeds a ``string`` export as its decimal text.
* history (a list of item ids): a Parquet list column, or text holding a JSON array
  (``[12, 7, 99]``, ``["a", "b"]``) or ids separated by spaces, commas, semicolons or ``|``
  (``12 7 99``). A missing history (null) or a null / malformed id in it -> rejected; an empty
  history is valid (a user the model knows nothing about, :mod:`tfsoft.batch.vocabulary`).
* a CSV row with the wrong number of fields -> rejected (column ``*``).

Example:
    >>> valid, rejects = parse_batch(raw, user_column="user_id", history_column="history",
    ...                              user_dtype="int64", item_dtype="int64")    # doctest: +SKIP
    >>> valid.users, valid.rows, rejects.num_rows                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REJECT_SCHEMA = pa.schema([("file", pa.string()), ("row", pa.int64()), ("column", pa.string()),
                           ("reason", pa.string()), ("value", pa.string()), ("user_id", pa.string())])
_SEPARATORS = re.compile(r"[\s,;|]+")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_SHOWN = 200


@dataclass
class QueryRows:
    """Valid rows: ``rows`` [N] row numbers, ``users`` [N] raw ids (int64 or object str), and the
    histories as flat ``history_values`` with ``history_offsets`` [N + 1] (row i's items are
    ``values[offsets[i]:offsets[i + 1]]``); histories are None when not read."""

    file: str
    rows: np.ndarray
    users: np.ndarray
    history_values: Optional[np.ndarray] = None
    history_offsets: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, positions: np.ndarray) -> "QueryRows":
        """The rows at ``positions`` (an int array), histories re-packed."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.history_offsets is None:
            return QueryRows(self.file, self.rows[positions], self.users[positions])
        starts, stops = self.history_offsets[positions], self.history_offsets[positions + 1]
        lengths = stops - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return QueryRows(self.file, self.rows[positions], self.users[positions], self.history_values[flat], offsets)

    def padded_history(self, pad, width: Optional[int] = None) -> np.ndarray:
        """[N, width] histories, oldest first, right-padded with ``pad`` (width: the longest, >= 1)."""
        lengths = np.diff(self.history_offsets)
        width = max(1, int(lengths.max(initial=0))) if width is None else width
        out = np.full((len(self.rows), width), pad, dtype=self.history_values.dtype if len(self.history_values)
                      else (object if isinstance(pad, str) else np.int64))
        column = np.arange(len(self.history_values), dtype=np.int64) - np.repeat(self.history_offsets[:-1], lengths)
        out[np.repeat(np.arange(len(self.rows)), lengths), column] = self.history_values
        return out


class _Rejects:
    def __init__(self, file: str):
        self.file, self.rows, self.columns, self.reasons, self.values, self.users = file, [], [], [], [], []

    def add(self, row, column: str, reason: str, value, user=None) -> None:
        self.users.append(None if user is None else str(user))
        self.rows.append(None if row is None else int(row))
        self.columns.append(column)
        self.reasons.append(reason)
        self.values.append(None if value is None else str(value)[:_SHOWN])

    def table(self) -> pa.Table:
        return pa.table({"file": [self.file] * len(self.rows), "row": pa.array(self.rows, pa.int64()),
                         "column": self.columns, "reason": self.reasons, "value": pa.array(self.values, pa.string()),
                         "user_id": pa.array(self.users, pa.string())},
                        schema=REJECT_SCHEMA)


def _parse_int(value) -> int | None:
    """An int64 from an int or integer text (surrounding spaces allowed), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    else:
        return None
    return number if _INT64[0] <= number <= _INT64[1] else None


def _id_problem(value, dtype: str):
    """(parsed id, None) or (None, reason)."""
    if value is None:
        return None, "missing"
    if dtype == "int64":
        number = _parse_int(value)
        return (number, None) if number is not None else (None, "not an integer in the int64 range")
    text = str(value)
    return (text, None) if text else (None, "empty")


def _scalar_ids(array: pa.ChunkedArray, dtype: str):
    """Fast path: the whole column converts cleanly -> numpy array, else None."""
    if array.null_count:
        return None
    try:
        if dtype == "int64":
            if not (pa.types.is_integer(array.type) or pa.types.is_string(array.type)):
                return None
            return pc.cast(array, pa.int64()).to_numpy()
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            values = array.to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(array.type):
            values = pc.cast(array, pa.string()).to_numpy(zero_copy_only=False)
        else:
            return None
        return None if (values == "").any() else values.astype(object)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _split_history(text: str, dtype: str):
    """Items of a textual history, or raise ValueError with the reason."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a JSON array ({error.msg} at character {error.pos})") from None
        if not isinstance(items, list):
            raise ValueError("not a JSON array")
    else:
        items = [part for part in _SEPARATORS.split(text) if part]
    return items


def _history_items(value, dtype: str):
    """(list of parsed ids, None) or (None, reason)."""
    if value is None:
        return None, "missing"
    try:
        items = _split_history(value, dtype) if isinstance(value, str) else list(value)
    except ValueError as error:
        return None, str(error)
    parsed = []
    for position, item in enumerate(items, start=1):
        if dtype == "string" and isinstance(item, (int, str)) and not isinstance(item, bool):
            item = str(item)
        number, problem = _id_problem(item, dtype)
        if problem:
            return None, f"item {position} ({item!r}) is {problem}"
        parsed.append(number)
    return parsed, None


def parse_batch(raw, *, user_column: str, history_column: Optional[str], user_dtype: str,
                item_dtype: str) -> tuple[QueryRows, pa.Table]:
    """Split a :class:`~tfsoft.batch.reader.RawBatch` into valid :class:`QueryRows` and a rejects
    table (:data:`REJECT_SCHEMA`), in row order (module docstring)."""
    file = str(raw.file)
    rejects = _Rejects(file)
    for row, text in raw.broken:
        rejects.add(row, "*", "the row does not have the header's number of fields", text)
    table, rows = raw.table, np.asarray(raw.rows, dtype=np.int64)
    count = table.num_rows
    ok = np.ones(count, dtype=bool)
    users = _scalar_ids(table.column(user_column), user_dtype)
    if users is None:  # the slow path names every bad row
        users = np.empty(count, dtype=np.int64 if user_dtype == "int64" else object)
        for position, value in enumerate(table.column(user_column).to_pylist()):
            parsed, problem = _id_problem(value, user_dtype)
            if problem:
                ok[position] = False
                rejects.add(rows[position], user_column, f"user id is {problem}", value)
            else:
                users[position] = parsed
    values = offsets = None
    if history_column is not None:
        values, offsets = _histories(table.column(history_column), item_dtype, ok, rows, rejects, history_column,
                                     users)
    valid = QueryRows(file, rows, users, values, offsets)
    if not ok.all():
        valid = valid.take(np.flatnonzero(ok))
    reject_table = rejects.table()
    if reject_table.num_rows:
        reject_table = reject_table.sort_by([("row", "ascending")])
    return valid, reject_table


def _histories(column: pa.ChunkedArray, dtype: str, ok: np.ndarray, rows, rejects: _Rejects, name: str, users):
    """Flat values + offsets of every row's history (bad rows: empty, and ``ok`` cleared)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        fast = _list_fast_path(column, dtype)
        if fast is not None:
            return fast
    elif not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        for position in range(len(column)):
            if ok[position]:
                ok[position] = False
                rejects.add(rows[position], name, f"history must be a list of item ids or text; the column is "
                                                  f"{column.type}", column[position].as_py(), users[position])
        return np.empty(0, np.int64 if dtype == "int64" else object), np.zeros(len(column) + 1, np.int64)
    lists = []
    for position, value in enumerate(column.to_pylist()):
        items, problem = _history_items(value, dtype)
        if problem:
            if ok[position]:
                ok[position] = False
                rejects.add(rows[position], name, f"history is {problem}" if problem == "missing"
                            else f"history: {problem}", value, users[position])
            items = []
        lists.append(items)
    lengths = np.fromiter((len(items) for items in lists), dtype=np.int64, count=len(lists))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = [item for items in lists for item in items]
    values = np.asarray(flat, dtype=np.int64) if dtype == "int64" else np.asarray(flat, dtype=object)
    return values, offsets


def _list_fast_path(column: pa.Array, dtype: str):
    """A list column without nulls whose items convert cleanly -> (values, offsets), else None."""
    if column.null_count or pc.list_flatten(column).null_count:
        return None
    flat = pc.list_flatten(column)
    offsets = (column.offsets.to_numpy() - column.offsets[0].as_py()).astype(np.int64)
    try:
        if dtype == "int64" and (pa.types.is_integer(flat.type) or pa.types.is_string(flat.type)):
            return pc.cast(flat, pa.int64()).to_numpy(), offsets
        if dtype == "string" and (pa.types.is_string(flat.type) or pa.types.is_integer(flat.type)):
            values = pc.cast(flat, pa.string()).to_numpy(zero_copy_only=False).astype(object)
            return (None if (values == "").any() else (values, offsets))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None
