import numpy as np
import pandas as pd
import pytest

from tfsoft.data import Ragged, SplitSpec, cut_windows, leave_one_out, prepare, ratio_split, temporal_split
from tfsoft.errors import DataError


def test_cut_windows_follows_csrec_rule():
    # Lengths 5 (whole), 40 (two windows), 45 (two from the end + the first 20, overlapping).
    seqs = Ragged.from_rows([list(range(5)), list(range(100, 140)), list(range(200, 245))])
    windows, owners = cut_windows(seqs, np.array([7, 8, 9]), 20)
    rows = windows.to_list()
    assert owners.tolist() == [7, 8, 8, 9, 9, 9]
    assert rows[0] == list(range(5))
    assert rows[1] == list(range(100, 120)) and rows[2] == list(range(120, 140))
    assert rows[3] == list(range(200, 220))  # first 20 items (overlaps the next window)
    assert rows[4] == list(range(205, 225)) and rows[5] == list(range(225, 245))


def test_leave_one_out_by_hand():
    seqs = Ragged.from_rows([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    split = leave_one_out(seqs, np.array([0, 1, 2]))
    assert split.train.to_list() == [[1, 2], [5, 6], [7]]  # the length-2 sequence trains whole
    assert split.validation.targets.to_list() == [[3], [8]]
    assert split.validation.history.to_list() == [[1, 2], [7]]
    assert split.test.targets.to_list() == [[4], [9]]
    assert split.test.history.to_list() == [[1, 2, 3], [7, 8]]
    assert split.test.user.tolist() == [0, 2]


def test_ratio_split_by_hand_and_seeded():
    seqs = Ragged.from_rows([list(range(10)), [10, 11, 12]])
    split = ratio_split(seqs, np.array([0, 1]), (0.8, 0.1, 0.1), seed=3)
    # 10 items: cuts at round(8.0)=8 and round(9.0)=9 -> train 8, validation 1, test 1.
    # 3 items: cuts at round(2.4)=2 and round(2.7)=3 -> train 2, validation 1, no test query.
    assert split.train.lengths.tolist() == [8, 2]
    assert split.validation.user.tolist() == [0, 1] and split.test.user.tolist() == [0]
    assert split.test.targets.lengths.tolist() == [1]
    first = set(split.train[0]) | set(split.validation.targets[0]) | set(split.test.targets[0])
    assert first == set(range(10))
    assert list(split.train[0]) == sorted(split.train[0])  # time order kept
    # history of the test query = train + validation, in time order
    assert sorted(split.test.history[0]) == list(split.test.history[0])
    assert set(split.test.history[0]) == set(range(10)) - set(split.test.targets[0])
    again = ratio_split(seqs, np.array([0, 1]), (0.8, 0.1, 0.1), seed=3)
    assert again.train.to_list() == split.train.to_list()
    other = ratio_split(seqs, np.array([0, 1]), (0.8, 0.1, 0.1), seed=4)
    assert other.train.to_list() != split.train.to_list()


def test_temporal_split_by_hand():
    seqs = Ragged.from_rows([[0, 1, 2, 3], [4, 5]])
    times = np.array([1, 2, 5, 9, 6, 7], dtype=float)
    split = temporal_split(seqs, np.array([0, 1]), times, validation_start=5, test_start=8)
    assert split.train.to_list() == [[0, 1], []]
    assert split.validation.targets.to_list() == [[2]]  # user 1 has no training history
    assert split.test.targets.to_list() == [[3]]
    assert split.test.history.to_list() == [[0, 1, 2]]
    with pytest.raises(DataError, match=r"validation_start \(9\) must be <= test_start \(8\)"):
        temporal_split(seqs, np.array([0, 1]), times, 9, 8)


def test_prepare_lastfm_statistics_and_windows(lastfm):
    plain = prepare(lastfm, SplitSpec())
    assert plain.statistics()["interactions"] == 52551
    assert (plain.users.size, plain.items.size) == (1090, 3646)
    assert len(plain.split.test) == 1090 and len(plain.split.validation) == 1090
    windowed = prepare(lastfm, SplitSpec(window=20))
    assert len(windowed.split.train) == 3173 and len(windowed.split.test) == 3173
    # Item indices are 1..3646; counts cover exactly the training interactions.
    assert windowed.item_counts.sum() == len(windowed.split.train.values)
    assert windowed.split.test.targets.values.min() >= 1
    assert windowed.train_weights is not None and (windowed.train_weights.values == 1).all()


def test_prepare_temporal_needs_time_column(lastfm):
    with pytest.raises(DataError, match=r"temporal split needs a time column"):
        prepare(lastfm, SplitSpec(protocol="temporal"))


def test_prepare_rejects_unknown_protocol(lastfm):
    with pytest.raises(DataError, match=r"split protocol must be one of leave_one_out, ratio, temporal; got 'random'"):
        prepare(lastfm, SplitSpec(protocol="random"))


def test_prepare_temporal_fractions():
    frame = pd.DataFrame({"user": [1] * 10, "item": list(range(10)), "timestamp": np.arange(10.0),
                          "position": np.arange(10)})
    prepared = prepare(frame, SplitSpec(protocol="temporal", validation_fraction=0.2, test_fraction=0.2))
    assert len(prepared.split.train.values) == 6
    assert len(prepared.split.validation.targets.values) == 2 and len(prepared.split.test.targets.values) == 2
