"""Raw rows -> query rows and rejects, against hand-written expectations; QueryRows helpers
against plain Python."""

import numpy as np
import pyarrow as pa
import pytest

from tfsoft.batch.reader import RawBatch, read_batches
from tfsoft.batch.rows import REJECT_SCHEMA, QueryRows, parse_batch


def _raw(table, rows=None, broken=()):
    rows = np.arange(1, table.num_rows + 1) if rows is None else np.asarray(rows)
    return RawBatch("f.parquet", rows, table, list(broken))


def _parse(table, dtype="int64", history="history", **kwargs):
    return parse_batch(_raw(table, **kwargs), user_column="user_id", history_column=history, user_dtype=dtype,
                       item_dtype=dtype)


def _histories(valid):
    return [valid.history_values[a:b].tolist() for a, b in zip(valid.history_offsets[:-1], valid.history_offsets[1:])]


def test_clean_typed_columns_take_the_fast_path():
    table = pa.table({"user_id": pa.array([5, 6, 7], pa.int32()), "history": [[1, 2], [], [3]]})
    valid, rejects = _parse(table)
    assert valid.users.tolist() == [5, 6, 7] and valid.users.dtype == np.int64
    assert _histories(valid) == [[1, 2], [], [3]] and rejects.num_rows == 0 and rejects.schema == REJECT_SCHEMA


def test_text_columns_parse_json_and_separated_lists_and_reject_bad_rows_with_reasons():
    table = pa.table({
        "user_id": ["1", "x", "", " 4 ", "5", "6", "7", "99999999999999999999", "9"],
        "history": ["1 2", "3", "4", "[5, 6]", "[7,", "8|9;10", "1 two", "1", None]})
    valid, rejects = _parse(table)
    assert valid.rows.tolist() == [1, 4, 6] and valid.users.tolist() == [1, 4, 6]
    assert _histories(valid) == [[1, 2], [5, 6], [8, 9, 10]]
    got = {r["row"]: (r["column"], r["reason"], r["value"], r["user_id"]) for r in rejects.to_pylist()}
    assert got[2] == ("user_id", "user id is not an integer in the int64 range", "x", None)
    assert got[3] == ("user_id", "user id is not an integer in the int64 range", "", None)
    assert got[5][0] == "history" and got[5][1].startswith("history: not a JSON array") and got[5][3] == "5"
    assert got[7] == ("history", "history: item 2 ('two') is not an integer in the int64 range", "1 two", "7")
    assert got[8][0] == "user_id" and got[9] == ("history", "history is missing", None, "9")
    assert rejects.column("row").to_pylist() == sorted(got)


def test_parquet_nulls_and_string_ids():
    table = pa.table({"user_id": ["a", None, "c", ""], "history": [["x", None], ["y"], ["z", "w"], ["v"]]})
    valid, rejects = _parse(table, dtype="string")
    assert valid.users.tolist() == ["c"] and _histories(valid) == [["z", "w"]]
    reasons = dict(zip(rejects.column("row").to_pylist(), rejects.column("reason").to_pylist()))
    assert reasons == {1: "history: item 2 (None) is missing", 2: "user id is missing", 4: "user id is empty"}
    # integer columns feed a string export as their decimal text
    valid, rejects = _parse(pa.table({"user_id": [7], "history": [[1, 2]]}), dtype="string")
    assert valid.users.tolist() == ["7"] and _histories(valid) == [["1", "2"]] and rejects.num_rows == 0


def test_broken_csv_rows_and_user_only_input(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("user_id,x\n1,a\n2\n3,c\n")
    (raw,) = list(read_batches([path], ["user_id"], 10))
    valid, rejects = parse_batch(raw, user_column="user_id", history_column=None, user_dtype="int64",
                                 item_dtype="int64")
    assert valid.users.tolist() == [1, 3] and valid.rows.tolist() == [1, 3] and valid.history_offsets is None
    assert rejects.to_pylist()[0]["row"] == 2 and rejects.to_pylist()[0]["column"] == "*"


def test_take_and_padded_history_match_python():
    rows = QueryRows("f", np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40]), np.array([1, 2, 3, 4, 5, 6]),
                     np.array([0, 2, 2, 5, 6]))
    part = rows.take(np.array([3, 0, 2]))
    assert part.users.tolist() == [40, 10, 30] and _histories(part) == [[6], [1, 2], [3, 4, 5]]
    assert part.padded_history(-1).tolist() == [[6, -1, -1], [1, 2, -1], [3, 4, 5]]
    assert rows.take(np.array([1])).padded_history(-1).tolist() == [[-1]]  # width >= 1
    strings = QueryRows("f", np.array([1]), np.array(["u"], object), np.array(["a"], object), np.array([0, 1]))
    assert strings.padded_history("", width=3).tolist() == [["a", "", ""]]


@pytest.mark.parametrize("dtype", ["int64", "string"])
def test_fast_and_slow_paths_agree(dtype, rng):
    ids = rng.integers(1, 1000, 50)
    users = ids if dtype == "int64" else [f"u{i}" for i in ids]
    lists = [list(rng.integers(1, 50, rng.integers(0, 5))) for _ in ids]
    lists = lists if dtype == "int64" else [[f"i{j}" for j in row] for row in lists]
    fast, _ = _parse(pa.table({"user_id": users, "history": lists}), dtype=dtype)
    text = [" ".join(map(str, row)) for row in lists]
    slow, _ = _parse(pa.table({"user_id": [str(u) for u in users], "history": text}), dtype=dtype)
    assert fast.users.tolist() == slow.users.tolist() and _histories(fast) == _histories(slow)
