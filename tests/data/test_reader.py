import numpy as np
import pandas as pd
import pytest

from tfsoft.data import ColumnSpec, read_interactions
from tfsoft.errors import DataError

SPEC = ColumnSpec(user="user", item="item", time="ts", weight="rating")


def write(tmp_path, text, name="ratings.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_csv_into_canonical_columns_in_time_order(tmp_path):
    path = write(tmp_path, "user,item,ts,rating\nu1,a,30,1\nu2,b,10,2\nu1,b,20,5\n")
    frame = read_interactions(path, SPEC)
    assert list(frame.columns) == ["user", "item", "timestamp", "weight", "position"]
    assert frame["user"].tolist() == ["u1", "u1", "u2"]
    assert frame["item"].tolist() == ["b", "a", "b"]  # u1 sorted by time
    assert frame["timestamp"].tolist() == [20.0, 30.0, 10.0]
    assert frame["position"].tolist() == [2, 0, 1]


def test_file_order_is_time_order_without_time_column(tmp_path):
    path = write(tmp_path, "user,item\n2,7\n1,5\n2,3\n1,4\n")
    frame = read_interactions(path, ColumnSpec(user="user", item="item"))
    assert frame["user"].tolist() == [2, 2, 1, 1]
    assert frame["item"].tolist() == [7, 3, 5, 4]
    assert frame["user"].dtype == np.int64


def test_equal_timestamps_keep_file_order(tmp_path):
    path = write(tmp_path, "user,item,ts\n1,c,5\n1,a,5\n1,b,1\n")
    frame = read_interactions(path, ColumnSpec(user="user", item="item", time="ts"))
    assert frame["item"].tolist() == ["b", "c", "a"]


def test_ids_with_leading_zeros_stay_strings(tmp_path):
    path = write(tmp_path, "user,item\n007,1\n7,2\n")
    frame = read_interactions(path, ColumnSpec(user="user", item="item"))
    assert frame["user"].tolist() == ["007", "7"]
    assert frame["item"].tolist() == [1, 2]


def test_parquet_and_dataframe_sources(tmp_path):
    data = pd.DataFrame({"user": [1, 1, 2], "item": [10, 11, 10], "ts": [1, 2, 3], "genre": ["x", "y", "x"]})
    path = tmp_path / "x.parquet"
    data.to_parquet(path)
    spec = ColumnSpec(user="user", item="item", time="ts", item_features=("genre",))
    from_file = read_interactions(path, spec)
    from_frame = read_interactions(data, spec)
    pd.testing.assert_frame_equal(from_file, from_frame)
    assert from_frame["genre"].tolist() == ["x", "y", "x"]


def test_recbole_atomic_headers_and_tabs(tmp_path):
    path = write(tmp_path, "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t100\n", "x.inter")
    frame = read_interactions(path, ColumnSpec(time="timestamp", weight="rating"))
    assert frame.loc[0, "item"] == 2 and frame.loc[0, "weight"] == 3.0


def test_iso_dates_are_accepted(tmp_path):
    path = write(tmp_path, "user,item,ts\n1,a,2024-01-02\n1,b,2024-01-01T10:00:00\n")
    frame = read_interactions(path, ColumnSpec(user="user", item="item", time="ts"))
    assert frame["item"].tolist() == ["b", "a"]


@pytest.mark.parametrize(
    "text, spec, message",
    [
        ("user,movie,ts\n1,2,3\n", ColumnSpec(user="user", item="item", time="ts"),
         r"column 'item' missing from file '.*ratings.csv'; found: user, movie, ts"),
        ("user,item\n1,2\n,3\n", ColumnSpec(user="user", item="item"),
         r"column 'user' of file '.*ratings.csv' has an empty id at row 2 \(line 3\)"),
        ("user,item\n1,2\n2,\n3,\n", ColumnSpec(user="user", item="item"),
         r"column 'item' .* empty id at row 2 \(line 3\) \(and 1 more rows\)"),
        ("user,item,ts\n1,2,100\n1,3,abc\n", ColumnSpec(user="user", item="item", time="ts"),
         r"column 'ts' of file .* numeric timestamps .* row 2 \(line 3\) has 'abc'"),
        ("user,item,ts\n1,2,3\nuser,item,ts\n4,5,6\n", ColumnSpec(user="user", item="item", time="ts"),
         r"repeats its header at row 2 \(line 3\)"),
        ("user,item,user\n1,2,3\n", ColumnSpec(user="user", item="item"),
         r"column 'user' appears twice in the header of file .* \(columns 1 and 3\)"),
        ("user,item\n", ColumnSpec(user="user", item="item"), r"has a header but no data rows"),
        ("user,item,r\n1,2,-1\n", ColumnSpec(user="user", item="item", weight="r"),
         r"column 'r' .* finite non-negative numbers; row 1 \(line 2\) has -1$"),
        ("user,item\n1,2\n\n3,4\n", ColumnSpec(user="user", item="item"), r"empty line at row 2 \(line 3\)"),
    ],
)
def test_bad_inputs_name_file_column_and_row(tmp_path, text, spec, message):
    with pytest.raises(DataError, match=message):
        read_interactions(write(tmp_path, text), spec)


def test_wrong_explicit_delimiter_is_explained(tmp_path):
    path = write(tmp_path, "user;item\n1;2\n")
    with pytest.raises(DataError, match=r"read as ','-separated .* looks ';'-separated: pass delimiter=';'"):
        read_interactions(path, ColumnSpec(user="user", item="item"), delimiter=",")


def test_tsv_file_with_commas_is_explained(tmp_path):
    path = write(tmp_path, "user,item\n1,2\n", "ratings.tsv")
    with pytest.raises(DataError, match=r"ratings.tsv' was read as '\\t'-separated .* pass delimiter=','"):
        read_interactions(path, ColumnSpec(user="user", item="item"))


def test_guessed_delimiter_reads_semicolons(tmp_path):
    frame = read_interactions(write(tmp_path, "user;item\n1;2\n"), ColumnSpec(user="user", item="item"))
    assert frame["item"].tolist() == [2]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"file '.*nothing.csv' does not exist"):
        read_interactions(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match=r"is empty \(0 bytes\)"):
        read_interactions(write(tmp_path, ""))
    with pytest.raises(DataError, match=r"empty header line"):
        read_interactions(write(tmp_path, "\n1,2\n"))


def test_null_id_in_dataframe_names_row(tmp_path):
    data = pd.DataFrame({"user_id": [1, None, 3], "item_id": [1, 2, 3]})
    with pytest.raises(DataError, match=r"column 'user_id' of DataFrame has an empty id at row 2"):
        read_interactions(data)


def test_bad_parquet_is_a_data_error(tmp_path):
    path = write(tmp_path, "not parquet", "x.parquet")
    with pytest.raises(DataError, match=r"cannot read Parquet file"):
        read_interactions(path)


def test_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark."""
    path = tmp_path / "excel.csv"
    path.write_bytes("user_id,item_id\n1,2\n1,3\n".encode("utf-8-sig"))
    frame = read_interactions(path)
    assert frame["user"].tolist() == [1, 1] and frame["item"].tolist() == [2, 3]
    tsv = tmp_path / "excel.tsv"
    tsv.write_bytes("user\titem\tts\nu1\ta\t5\n".encode("utf-8-sig"))
    assert read_interactions(tsv, ColumnSpec(user="user", item="item", time="ts"))["user"].tolist() == ["u1"]


def test_ids_spelled_like_missing_values_are_ids(tmp_path):
    path = write(tmp_path, "user,item,r\nNA,null,1\nNone,nan,NA\nn/a,NULL,2\n")
    frame = read_interactions(path, ColumnSpec(user="user", item="item"))
    assert sorted(frame["user"]) == ["NA", "None", "n/a"] and sorted(frame["item"]) == ["NULL", "nan", "null"]
    with pytest.raises(DataError, match=r"column 'user' .* has an empty id at row 2 \(line 3\)"):
        read_interactions(write(tmp_path, "user,item\nNA,1\n,2\n", "empty.csv"),
                          ColumnSpec(user="user", item="item"))
    # the other columns keep pandas' NA spellings: 'NA' is a missing rating, not the number it is not
    with pytest.raises(DataError, match=r"column 'r' .* finite non-negative numbers; row 2 \(line 3\) has nan"):
        read_interactions(path, ColumnSpec(user="user", item="item", weight="r"))


@pytest.mark.parametrize("column", ["item_id", "user_id"])
def test_parquet_id_column_of_lists_is_refused(tmp_path, column):
    data = {"user_id": [1, 2], "item_id": [10, 11]}
    data[column] = [[1, 2], [3]]
    path = tmp_path / "lists.parquet"
    pd.DataFrame(data).to_parquet(path)
    with pytest.raises(DataError, match=rf"column '{column}' of file '.*lists.parquet' holds lists \(Parquet type "
                                        rf"list<element: int64>\), not ids: row 1 has \[1, 2\] \(2 such rows\); "
                                        rf"expected one scalar id per row \(int or string\)"):
        read_interactions(path)
    with pytest.raises(DataError, match=rf"column '{column}' of DataFrame holds lists \(Python type list\)"):
        read_interactions(pd.DataFrame(data))


def test_feature_files_strip_a_byte_order_mark_and_keep_na_spelled_ids(tmp_path):
    from tfsoft.data.features import read_feature_file

    path = tmp_path / "items.csv"
    path.write_bytes("\ufeffitem_id,genre\n1,drama\nNA,comedy\n3,\n".encode("utf-8"))
    frame = read_feature_file(path)
    assert list(frame.columns) == ["item_id", "genre"]
    assert frame["item_id"].tolist() == ["1", "NA", "3"]  # "NA" is an id; ids stay strings when one is not an int
    assert frame["genre"].isna().tolist() == [False, False, True]  # only the empty cell is missing
