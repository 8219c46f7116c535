import numpy as np
import pytest

from tfsoft.data import OOV_INDEX, Vocabulary, item_counts
from tfsoft.errors import DataError


def test_frequency_order_and_oov():
    vocab = Vocabulary.build(["b", "a", "c", "a", "c", "c"], name="item", order="frequency")
    assert vocab.tokens == ("c", "a", "b")
    assert vocab.lookup(["c", "a", "b", "nope"]).tolist() == [1, 2, 3, OOV_INDEX]
    assert vocab.ids([0, 1, 3, 99]) == [None, "c", "b", None]
    assert vocab.num_indices == 4 and vocab.size == 3


def test_int_ids_round_trip_and_accept_strings(tmp_path):
    vocab = Vocabulary.build(np.array([30, 10, 20]), name="user")
    assert vocab.dtype == "int64" and vocab.tokens == (30, 10, 20)
    assert vocab.lookup(["10", 20, "x"]).tolist() == [2, 3, 0]
    path = vocab.save(tmp_path / "v.json")
    loaded = Vocabulary.load(path)
    assert loaded == vocab and loaded.lookup([30]).tolist() == [1]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match=r"vocabulary file '.*missing.json' does not exist"):
        Vocabulary.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"tokens\": []}")
    with pytest.raises(DataError, match=r"is not a tfsoft vocabulary"):
        Vocabulary.load(bad)


def test_item_counts_zero_for_oov_row():
    counts = item_counts(np.array([1, 1, 2, 0]), 4)
    assert counts.tolist() == [0, 2, 1, 0]
