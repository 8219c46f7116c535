import numpy as np

from tfsoft.data import Ragged, left_pad, next_item_examples


def test_left_pad_keeps_most_recent():
    assert left_pad(Ragged.from_rows([[1, 2, 3], [4], []]), 2).tolist() == [[2, 3], [0, 4], [0, 0]]


def test_position_examples_by_hand():
    train = Ragged.from_rows([[1, 2, 3, 4], [5, 6]])
    examples = next_item_examples(train, np.array([10, 11]), max_history=2)
    assert examples.target.tolist() == [2, 3, 4, 6]
    assert examples.history.tolist() == [[0, 1], [1, 2], [2, 3], [0, 5]]
    assert examples.user.tolist() == [10, 10, 10, 11]
    assert examples.row.tolist() == [1, 2, 3, 5]
    every = next_item_examples(train, np.array([10, 11]), max_history=2, min_history=0)
    assert every.target.tolist() == [1, 2, 3, 4, 5, 6]
    assert every.history[0].tolist() == [0, 0]


def test_user_examples_shift_by_one():
    train = Ragged.from_rows([[1, 2, 3, 4], [5], [6, 7]])
    examples = next_item_examples(train, np.array([0, 1, 2]), max_history=3, mode="user")
    assert examples.user.tolist() == [0, 2]
    assert examples.history.tolist() == [[1, 2, 3], [0, 0, 6]]
    assert examples.target.tolist() == [[2, 3, 4], [0, 0, 7]]


def test_position_examples_match_naive_loop_on_real_data(lastfm):
    from tfsoft.data import SplitSpec, prepare

    split = prepare(lastfm, SplitSpec(window=20)).split
    examples = next_item_examples(split.train, split.train_user, max_history=5)
    naive_history, naive_target = [], []
    for sequence in split.train:
        for p in range(1, len(sequence)):
            previous = list(sequence[max(0, p - 5):p])
            naive_history.append([0] * (5 - len(previous)) + previous)
            naive_target.append(sequence[p])
    assert examples.history.tolist() == naive_history
    assert examples.target.tolist() == naive_target
