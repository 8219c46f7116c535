"""Known users/histories and popular items, against Python sets and lists."""

import numpy as np

from tfsoft.batch.vocabulary import ExportVocabulary, is_member, read_ids


def test_is_member_matches_a_set(rng):
    vocabulary = np.sort(rng.choice(1000, 300, replace=False))
    values = rng.integers(-5, 1100, 500)
    assert is_member(values, vocabulary).tolist() == [v in set(vocabulary.tolist()) for v in values]
    words = np.sort(np.asarray(["b", "d", "f"], object))
    assert is_member(np.asarray(["a", "b", "g", "f"], object), words).tolist() == [False, True, False, True]
    assert is_member(np.asarray([1]), np.asarray([], np.int64)).tolist() == [False]


def test_known_histories_and_popular(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "user_ids.txt").write_text("7\n3\n")
    (tmp_path / "assets" / "item_ids.txt").write_text("30\n10\n20\n40\n")
    vocabulary = ExportVocabulary.load(tmp_path, "int64", "int64")
    assert read_ids(tmp_path / "assets" / "item_ids.txt", "int64").tolist() == [30, 10, 20, 40]
    assert vocabulary.known_users(np.array([3, 4, 7])).tolist() == [True, False, True]
    values, offsets = np.array([99, 10, 98, 97, 40]), np.array([0, 0, 2, 2, 4, 5, 5])
    assert vocabulary.known_histories(values, offsets).tolist() == [False, True, False, False, True, False]
    assert vocabulary.popular(2) == [30, 10]  # file order = training frequency
    assert vocabulary.popular(2, exclude=np.array([30, 5])) == [10, 20]
    assert vocabulary.popular(9, exclude=np.array([10])) == [30, 20, 40]
