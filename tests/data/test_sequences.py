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


def test_window_mode_makes_every_interaction_but_the_first_a_target_once():
    import numpy as np

    from tfsoft.data.ragged import Ragged
    from tfsoft.data.sequences import next_item_examples

    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, 50, size=n)) for n in (1, 2, 5, 7, 20, 21, 43)]
    train = Ragged.from_rows(rows)
    for max_history in (1, 3, 5, 20):
        ex = next_item_examples(train, np.arange(len(rows)) + 100, max_history, mode="window")
        assert ex.history.shape == ex.target.shape == (len(ex), max_history)
        for user, row in enumerate(rows):
            mine = ex.user == user + 100
            targets = ex.target[mine]
            # every position but the first is a target exactly once
            assert sorted(targets[targets > 0].tolist()) == sorted(row[1:])
            assert mine.sum() == -(-(len(row) - 1) // max_history)
            for history, target in zip(ex.history[mine], targets):
                keep = target > 0
                # within a window, position p reads item p and predicts item p + 1 of the sequence
                padded = np.r_[history[keep], target[keep][-1:]]
                start = next(i for i in range(len(row)) if row[i:i + len(padded)] == padded.tolist())
                assert row[start:start + len(padded)] == padded.tolist()
                assert np.all(history[~keep] == 0)
    user_mode = next_item_examples(train, np.arange(len(rows)), 5, mode="user")
    assert (user_mode.target > 0).sum() < (next_item_examples(train, np.arange(len(rows)), 5, mode="window").target > 0).sum()
