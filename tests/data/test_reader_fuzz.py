"""Property-based fuzzing of :func:`tfsoft.data.read_interactions` (Hypothesis).

Whatever the CSV/TSV/Parquet file holds, the reader either returns a well-formed canonical frame or
raises :class:`tfsoft.errors.DataError` naming the file: never another exception type, and it writes
nothing next to the file. Files written with :mod:`csv` are also read back: every id the reader
returns is the cell written in its source row (``position``), so a misread (columns shifted by a
ragged row, a header split at the wrong place) fails too.

Bounded for CI: a fixed example count per test, ``derandomize=True`` (the same examples on every
run, no example database written into the checkout).
"""

import csv
import io
import math
import os
import re
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tfsoft.data import ColumnSpec, read_interactions
from tfsoft.errors import DataError


def fuzz_settings(examples):
    # tmp_path is function-scoped: each example makes its own fresh directory below it.
    # deadline: 5 s an example, for work of a few milliseconds (generous on a busy machine)
    return settings(max_examples=examples, deadline=5000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def fresh_dir(tmp_path):
    return tempfile.mkdtemp(dir=tmp_path)


def read_or_refuse(path, spec, **kwargs):
    """The frame, or None after a DataError naming the file; anything else propagates and fails the test."""
    before = sorted(os.listdir(os.path.dirname(path)))
    try:
        frame = read_interactions(path, spec, **kwargs)
    except DataError as error:
        assert str(path) in str(error), f"DataError does not name the file: {error}"
        event("DataError: " + re.sub(r"[0-9]+", "N", str(error).replace(str(path), "FILE"))[:60])
        frame = None
    assert sorted(os.listdir(os.path.dirname(path))) == before == [os.path.basename(path)], "the reader wrote files"
    if frame is not None:
        event("read")
        check_canonical(frame, spec)
    return frame


def check_canonical(frame, spec):
    expected = ["user", "item"] + (["timestamp"] if spec.time else []) + (["weight"] if spec.weight else []) \
        + ["position"] + list(spec.user_features) + list(spec.item_features)
    assert list(frame.columns) == expected
    assert len(frame) > 0
    for column in ("user", "item"):
        ids = frame[column]
        assert ids.dtype == np.int64 or (ids.dtype == object and all(isinstance(v, str) and v for v in ids)), \
            (column, ids.dtype, ids.tolist()[:5])
    assert sorted(frame["position"]) == list(range(len(frame)))
    if spec.time:
        assert frame["timestamp"].dtype == np.float64 and np.isfinite(frame["timestamp"]).all()
    if spec.weight:
        assert frame["weight"].dtype == np.float64 and np.isfinite(frame["weight"]).all()
        assert (frame["weight"] >= 0).all()


# ---- text files written with the csv module: read back exactly, or refused -------------------------------

NA_SPELLINGS = ["", " ", "NA", "null", "None", "nan", "NaN", "n/a", "#N/A", "<NA>"]
ODD_CELLS = NA_SPELLINGS + [
    "inf", "-inf", "Infinity", "1e400", "1.5", "-0", "007", "0", "-7", "1e3",
    "a,b", "a;b", "a\tb", "a|b", 'say "hi"', '"', "line\nbreak", "é", "ü\u00a0", "\u2028", "\x85x", "\x0b",
    "\ufeff1", "\x00", "user", "item", "ts", "2024-01-02", "2024-01-02T03:04:05+02:00", "0001-01-01",
    "9999-12-31", " 12 ", "99999999999999999999", "-99999999999999999999", "18446744073709551616",
]
CELLS = st.one_of(
    st.sampled_from(ODD_CELLS),
    st.integers(0, 40).map(str),
    st.integers(-2 ** 80, 2 ** 80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    # no "\r": csv.writer with lineterminator "\n" would leave it unquoted, and every parser ends a line there
    st.text(st.characters(blacklist_characters="\r", blacklist_categories=("Cs",)), max_size=6),
)
CLEAN_CELLS = {  # what a well-formed file holds in each column
    "user": st.integers(0, 9).map(str),
    "item": st.integers(0, 30).map(str) | st.sampled_from(["a", "b", "song 7"]),
    "ts": st.integers(0, 2 * 10 ** 9).map(str) | st.floats(0, 1e10).map(repr),
    "w": st.integers(0, 5).map(str) | st.floats(0, 5).map(repr),
}
DELIMITERS = [",", "\t", ";", "|"]


@st.composite
def csv_files(draw):
    names = draw(st.permutations(["user", "item"] + draw(st.lists(st.sampled_from(["ts", "w", "genre", "x"]),
                                                                   unique=True))))
    if draw(st.integers(0, 9)) == 0:
        names = names[1:]  # an id column is missing
    chaos = draw(st.sampled_from([0, 0, 1, 3, 10]))  # in tenths: how often a cell, a row's length or a line is odd

    def odd():
        return draw(st.integers(0, 9)) < chaos

    delimiter = draw(st.sampled_from(DELIMITERS))
    rows = []
    for _ in range(draw(st.integers(1, 6)) if draw(st.integers(0, 9)) else 0):  # some header-only files
        width = len(names) + (draw(st.sampled_from([-1, 1, 2])) if odd() else 0)  # a ragged row
        rows.append([draw(CELLS) if odd() else draw(CLEAN_CELLS.get(names[i] if i < len(names) else "x", CELLS))
                     for i in range(max(width, 0))])
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(names)  # no names: an empty header line
    for row in rows:
        if odd() and draw(st.booleans()):
            buffer.write("\n")  # a blank line
        writer.writerow(row)
    text = buffer.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1"]))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    try:  # latin-1 bytes that happen to be valid UTF-8 ("Ã©" -> "é") are another text: no read-back check
        faithful = data.decode("utf-8-sig") == text
    except UnicodeDecodeError:
        faithful = True  # the reader must refuse it
    suffix = draw(st.sampled_from([".tsv"] if delimiter == "\t" else [".csv", ".txt"]) | st.sampled_from([".csv"]))
    spec = ColumnSpec(user="user", item="item",
                      time="ts" if draw(st.booleans()) and ("ts" in names or odd()) else None,
                      weight="w" if draw(st.booleans()) and ("w" in names or odd()) else None,
                      item_features=("genre",) if draw(st.booleans()) and ("genre" in names or odd()) else ())
    explicit = draw(st.booleans())
    return names, rows, data, faithful, suffix, spec, delimiter if explicit else None


@fuzz_settings(150)
@given(csv_files())
def test_csv_files_read_back_their_ids_or_fail_with_a_data_error(tmp_path, case):
    names, rows, data, faithful, suffix, spec, delimiter = case
    path = os.path.join(fresh_dir(tmp_path), "interactions" + suffix)
    with open(path, "wb") as handle:
        handle.write(data)
    frame = read_or_refuse(path, spec, delimiter=delimiter)
    if frame is None or not faithful:
        return
    assert len(frame) == len(rows)
    for column, name in (("user", spec.user), ("item", spec.item)):
        index = names.index(name)
        for value, position in zip(frame[column], frame["position"]):
            written = rows[position][index] if index < len(rows[position]) else None
            assert written is not None and str(value) == written.strip(), (column, position, value, rows[position])


_TOKENS = [b"user", b"item", b"ts", b"w", b"user_id", b"item_id", b":token", b":float", b",", b"\t", b";", b"|",
           b'"', b"'", b"\n", b"\r\n", b"\r", b" ", b"\xef\xbb\xbf", b"\xe9", b"\xff\xfe", b"\x00", b"\xc2\x85",
           b"\xe2\x80\xa8", b"nan", b"inf", b"NA", b"", b"-1", b"1.5", b"99999999999999999999", b"2024-01-02",
           b"1e400"]
_ID = st.integers(0, 9).map(lambda n: str(n).encode())
FIELDS = st.one_of(  # mostly plain ids, sometimes tokens that break something (raw bytes: text_bytes)
    _ID, _ID, _ID, st.lists(st.sampled_from(_TOKENS) | st.integers(-10, 10 ** 25).map(lambda n: str(n).encode()) | _ID,
                            min_size=1, max_size=3).map(b"".join))


@st.composite
def text_files(draw):
    """(bytes, file suffix, delimiter argument): mostly consistent with each other, sometimes not."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".txt", ".inter"]))
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=60)), suffix, draw(st.sampled_from([None, ",", "\t"]))
    separator = draw(st.sampled_from([b",", b"\t", b";", b"|"]))
    if draw(st.integers(0, 4)):  # the suffix and the delimiter argument agree with the separator
        suffix = draw(st.sampled_from([".tsv", ".inter", ".csv"] if separator == b"\t" else [".csv", ".txt"]))
    delimiter = draw(st.sampled_from([None, None, separator.decode(), ",", "\t"]))
    newline = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]))
    named = st.sampled_from([[b"user", b"item"], [b"user", b"item", b"ts", b"w"], [b"item", b"w", b"user"],
                             [b"user_id:token", b"item_id:token"]])
    header = draw(named | named | st.lists(FIELDS, max_size=4))
    lines = [separator.join(header)] + [separator.join(draw(st.lists(FIELDS, min_size=max(len(header) - 1, 0),
                                                                     max_size=len(header) + 1)))
                                        for _ in range(draw(st.integers(0, 5)))]
    bom = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf"]))
    return bom + newline.join(lines) + draw(st.sampled_from([b"", newline, newline * 2])), suffix, delimiter


@fuzz_settings(150)
@given(
    text_files(),
    st.sampled_from([ColumnSpec(user="user", item="item"), ColumnSpec(user="user", item="item", time="ts", weight="w"),
                     ColumnSpec()]),
)
def test_arbitrary_bytes_in_a_text_file_give_a_frame_or_a_data_error(tmp_path, case, spec):
    """Empty files, header-only files, stray quotes, NULs, BOMs, latin-1 bytes, CR-only lines, RecBole headers."""
    data, suffix, delimiter = case
    path = os.path.join(fresh_dir(tmp_path), "interactions" + suffix)
    with open(path, "wb") as handle:
        handle.write(data)
    read_or_refuse(path, spec, delimiter=delimiter)


# ---- Parquet files with random column types --------------------------------------------------------------

INT64_MAX = 2 ** 63 - 1


COLUMN_TYPES = {
    "int64": (pa.int64(), st.integers(-INT64_MAX - 1, INT64_MAX)),
    "small": (pa.int64(), st.integers(0, 5)),
    "uint64": (pa.uint64(), st.integers(0, 2 ** 64 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "float64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "float-int": (pa.float64(), st.sampled_from([0.0, 1.0, -3.0, 2.0 ** 63, -(2.0 ** 63), 1e30, 2.0 ** 53 + 1])),
    "string": (pa.string(), st.sampled_from(ODD_CELLS) | st.text(st.characters(blacklist_categories=("Cs",)),
                                                                 max_size=5)),
    "binary": (pa.binary(), st.binary(max_size=4)),
    "bool": (pa.bool_(), st.booleans()),
    "date32": (pa.date32(), st.integers(-700_000, 2_900_000)),
    "list": (pa.list_(pa.int64()), st.lists(st.integers(0, 9), max_size=3)),
    "struct": (pa.struct([("a", pa.int64())]), st.integers(0, 9).map(lambda a: {"a": a})),
    "null": (pa.null(), st.none()),
}
for _unit in ("s", "ms", "us", "ns"):  # int64 counts of the unit; pandas keeps s/ms/us, so dates far out too
    _bound = {"s": 10 ** 11, "ms": 10 ** 14, "us": 10 ** 17, "ns": INT64_MAX}[_unit]
    COLUMN_TYPES[f"ts-{_unit}"] = (pa.timestamp(_unit), st.integers(-_bound, _bound))
    COLUMN_TYPES[f"ts-{_unit}-tz"] = (pa.timestamp(_unit, tz="Asia/Kolkata"), st.integers(-_bound, _bound))


KINDS = {  # the column types each column may have: mostly what it should hold, also what it should not
    "user": ["small", "small", "small", "int64", "uint64", "string", "string", "float-int", "int8", "binary", "bool",
             "list", "struct", "null", "float64", "date32", "ts-us"],
    "item": ["small", "small", "small", "int64", "uint64", "string", "string", "float-int", "int8", "binary", "list"],
    "ts": ["small", "int64", "float64", "string", "date32", "binary", "list", "null"]
          + [name for name in COLUMN_TYPES if name.startswith("ts-")],
    "w": ["small", "float64", "int8", "string", "bool", "list", "null", "uint64"],
    "genre": sorted(COLUMN_TYPES),
}


@st.composite
def parquet_tables(draw):
    rows = draw(st.integers(1, 5)) if draw(st.integers(0, 9)) else 0
    names = draw(st.permutations(["user", "item"] + draw(st.lists(st.sampled_from(["ts", "w", "genre"]), unique=True))))
    if draw(st.integers(0, 9)) == 0:
        names = names[1:]  # an id column is missing
    missing = draw(st.sampled_from([0, 0, 0, 1, 5]))  # in twentieths: how often a cell is null
    arrays = []
    for name in names:
        kind = draw(st.sampled_from(KINDS[name]))
        arrow_type, values = COLUMN_TYPES[kind]
        cells = [None if kind != "null" and draw(st.integers(0, 19)) < missing else draw(values) for _ in range(rows)]
        arrays.append(pa.array(cells, type=arrow_type))
    spec = ColumnSpec(user="user", item="item", time="ts" if "ts" in names and draw(st.booleans()) else None,
                      weight="w" if "w" in names and draw(st.booleans()) else None,
                      user_features=("genre",) if "genre" in names and draw(st.booleans()) else ())
    truncate = draw(st.sampled_from([None] * 17 + [0.0, 0.5, 0.9]))
    return pa.Table.from_arrays(arrays, names=names), spec, truncate


@fuzz_settings(100)
@given(parquet_tables(), st.sampled_from([".parquet", ".pq"]))
def test_parquet_files_of_any_column_types_give_a_frame_or_a_data_error(tmp_path, case, suffix):
    table, spec, truncate = case
    path = os.path.join(fresh_dir(tmp_path), "interactions" + suffix)
    pq.write_table(table, path)
    if truncate is not None:  # a damaged file: an interrupted copy
        data = open(path, "rb").read()
        with open(path, "wb") as handle:
            handle.write(data[:math.floor(len(data) * truncate)])
    frame = read_or_refuse(path, spec)
    if frame is None or truncate is not None:
        return
    source = table.to_pandas()
    for column, name in (("user", spec.user), ("item", spec.item)):
        kind = table.schema.field(name).type
        if pa.types.is_integer(kind):  # integer ids come back as the same numbers (as text when beyond int64)
            written = [int(source[name].iloc[position]) for position in frame["position"]]
            assert [int(value) for value in frame[column]] == written, (column, kind)


def test_fuzzed_inputs_that_once_crashed_or_misread(tmp_path):
    """Inputs found while fuzzing the reader, pinned: each raised another exception than DataError, or read
    into a wrong frame."""
    spec = ColumnSpec(user="u", item="i")
    timed = ColumnSpec(user="u", item="i", time="t")

    def parquet(name, **columns):
        path = tmp_path / name
        pq.write_table(pa.table(columns), path)
        return path

    def text(name, content):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        return path

    # Parquet float ids: inf raised pandas' IntCastingNaNError, 1e30 became -9223372036854775808
    with pytest.raises(DataError, match=r"column 'u' of file '.*inf.parquet' holds non-integer id inf at row 2"):
        read_interactions(parquet("inf.parquet", u=[1.0, float("inf")], i=[1, 2]), spec)
    with pytest.raises(DataError, match=r"holds id 1e\+30 at row 1, outside the int64 range"):
        read_interactions(parquet("big.parquet", u=[1e30], i=[1]), spec)
    # Parquet uint64 ids beyond int64 wrapped to negative numbers (2**64 - 1 became -1): now strings, as in text
    wide = read_interactions(parquet("u64.parquet", u=pa.array([2 ** 64 - 1, 1], pa.uint64()), i=[1, 2]), spec)
    assert wide["user"].tolist() == ["18446744073709551615", "1"]
    # Parquet binary ids that are not UTF-8 raised UnicodeDecodeError
    with pytest.raises(DataError, match=r"column 'u' of file '.*bin.parquet' holds binary values that are not UTF-8"):
        read_interactions(parquet("bin.parquet", u=pa.array([b"\xff"], pa.binary()), i=[1]), spec)
    # tz-aware Parquet timestamps raised TypeError; dates past 2262 raised OutOfBoundsDatetime
    aware = parquet("tz.parquet", u=[1, 1], i=[1, 2], t=pa.array([0, 3600], pa.timestamp("s", tz="Asia/Kolkata")))
    assert read_interactions(aware, timed)["timestamp"].tolist() == [0.0, 3600.0]
    far = parquet("far.parquet", u=[1], i=[1], t=pa.array([32503680000], pa.timestamp("s")))
    assert read_interactions(far, timed)["timestamp"].tolist() == [32503680000.0]  # 3000-01-01
    # a tz-aware feature column before year 1 raised NotImplementedError (pandas re-parsed it from objects)
    early = parquet("early.parquet", u=[1, 1], i=[1, 2],
                    g=pa.array([0, -62_200_000_000], pa.timestamp("s", tz="Asia/Kolkata")))
    assert len(read_interactions(early, ColumnSpec(user="u", item="i", item_features=("g",)))["g"]) == 2
    # ISO-8601 dates in text files were 1,000 times too small (microseconds divided as if nanoseconds)
    dates = read_interactions(text("dates.csv", "u,i,t\n1,1,1970-01-02\n1,2,2024-01-01T00:00:00Z\n"), timed)
    assert dates["timestamp"].tolist() == [86400.0, 1704067200.0]
    # a first data row longer than the header became pandas' index: every column shifted by one (u=2, i=3)
    with pytest.raises(DataError, match=r"ragged.csv' as ','-separated text: a data row has more fields than the 2 "):
        read_interactions(text("ragged.csv", "u,i\n1,2,3\n"), spec)
    with pytest.raises(DataError, match=r"trailing.csv' as ','-separated text: a data row has more fields"):
        read_interactions(text("trailing.csv", "u,i\n1,2,\n3,4,\n"), spec)  # was "empty id at row 1"
    with pytest.raises(DataError, match=r"blank.csv' as ','-separated text: a data row has more fields"):
        read_interactions(text("blank.csv", "i\n,\n"), spec)  # was ValueError: int('') of the index label
    # str.splitlines() cut the header at U+0085 (NEL), which the CSV parser reads as text: the names did not
    # match the columns (then shifted by pandas' implicit index, or refused for a column that is there)
    with pytest.raises(DataError, match=r"column 'i' missing from file '.*nel.csv'; found: u, i\x85x, t"):
        read_interactions(text("nel.csv", "u,i\x85x,t\n1,2,3\n"), spec)  # was silently u=2, i=3
    assert read_interactions(text("nel2.csv", "u\x85,i\n1,2\n"), spec)[["user", "item"]].values.tolist() == [[1, 2]]
    # a header field over the csv module's 128 KiB limit raised _csv.Error
    with pytest.raises(DataError, match=r"cannot parse the header \(line 1\) of file '.*long.csv'"):
        read_interactions(text("long.csv", "u,i," + "x" * 200_000 + "\n1,2,3\n"), spec)
