"""Input files, column checks, fingerprints and streamed batches with row numbers."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfsoft.batch.reader import check_columns, input_fingerprint, read_batches, resolve_input
from tfsoft.errors import DataError


def _parquet(path, rows, **kwargs):
    pq.write_table(pa.table({"user_id": list(range(1, rows + 1)), "history": [[1, 2]] * rows, "x": [0] * rows}),
                   path, **kwargs)
    return path


def test_resolve_input_file_directory_glob(tmp_path):
    for name in ("b.parquet", "a.parquet", "sub/c.parquet", "_hidden.parquet", ".tmp.parquet"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _parquet(tmp_path / name, 2)
    (tmp_path / "notes.txt").write_text("x")
    assert resolve_input(tmp_path / "a.parquet") == [tmp_path / "a.parquet"]
    assert resolve_input(tmp_path) == [tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "sub/c.parquet"]
    assert resolve_input(str(tmp_path / "*.parquet"))[:2] == [tmp_path / "_hidden.parquet", tmp_path / "a.parquet"]
    with pytest.raises(DataError, match="matches no file"):
        resolve_input(tmp_path / "nothing-*.csv")
    (tmp_path / "d.csv").write_text("user_id\n1\n")
    with pytest.raises(DataError, match="mixes formats"):
        resolve_input(str(tmp_path / "[ad].*"))
    with pytest.raises(DataError, match="cannot tell the format"):
        resolve_input(tmp_path / "notes.txt")


def test_check_columns_names_file_found_and_expected(tmp_path):
    good = _parquet(tmp_path / "good.parquet", 2)
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,items\n1,2\n")
    check_columns([good], ["user_id", "history"])
    with pytest.raises(DataError) as error:
        check_columns([good], ["user_id", "history", "extra"], " (hint)")
    assert "good.parquet' has no column 'extra'; found: user_id, history, x" in str(error.value)
    with pytest.raises(DataError) as error:
        check_columns([bad], ["user_id", "history"])
    message = str(error.value)
    assert "bad.csv" in message and "found: uid, items" in message and "expected: user_id, history" in message


def test_parquet_batches_number_rows_per_file(tmp_path):
    first = _parquet(tmp_path / "a.parquet", 7, row_group_size=3)
    second = _parquet(tmp_path / "b.parquet", 4)
    batches = list(read_batches([first, second], ["user_id"], 3))
    assert [b.table.column_names for b in batches] == [["user_id"]] * len(batches)
    rows = {str(f): np.concatenate([b.rows for b in batches if b.file == f]).tolist() for f in (first, second)}
    assert rows == {str(first): list(range(1, 8)), str(second): [1, 2, 3, 4]}
    assert all(b.table.num_rows <= 3 for b in batches)


def test_csv_batches_keep_row_numbers_around_broken_rows(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text('user_id,history,x\n1,"1 2",a\n2,"3"\n3,"4 5",b,extra\n4,,c\n5,"6",d\n')
    batches = list(read_batches([path], ["user_id", "history"], 2))
    rows = np.concatenate([b.rows for b in batches]).tolist()
    users = [u for b in batches for u in b.table.column("user_id").to_pylist()]
    assert list(zip(rows, users)) == [(1, "1"), (4, "4"), (5, "5")]
    assert sorted(row for b in batches for row, _ in b.broken) == [2, 3]
    assert batches[0].table.schema.field("history").type == pa.string()  # parsed by tfsoft.batch.rows


def test_fingerprint_follows_content_not_location(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = _parquet(tmp_path / "a" / "u.parquet", 3)
    two = _parquet(tmp_path / "b" / "u.parquet", 3)
    assert input_fingerprint([one], tmp_path / "a") == input_fingerprint([two], tmp_path / "b")
    _parquet(two, 4)
    assert input_fingerprint([one], tmp_path / "a") != input_fingerprint([two], tmp_path / "b")
