import numpy as np
import pytest

from tfsoft.data import make_dataset
from tfsoft.errors import DataError


def epochs(dataset, n=2):
    return [[batch["x"].numpy().tolist() for batch in dataset] for _ in range(n)]


def test_shuffle_is_deterministic_per_seed_and_reshuffles_each_epoch():
    features = {"x": np.arange(50), "y": np.arange(50) * 2}
    first = epochs(make_dataset(features, 8, seed=1))
    second = epochs(make_dataset(features, 8, seed=1))
    other = epochs(make_dataset(features, 8, seed=2))
    assert first == second
    assert first != other
    assert first[0] != first[1]
    assert sorted(sum(first[0], [])) == list(range(50))


def test_batches_and_drop_remainder():
    features = {"x": np.arange(10)}
    kept = [len(b["x"]) for b in make_dataset(features, 4, shuffle=False)]
    dropped = [len(b["x"]) for b in make_dataset(features, 4, shuffle=False, drop_remainder=True)]
    assert kept == [4, 4, 2] and dropped == [4, 4]
    first = next(iter(make_dataset(features, 4, shuffle=False)))
    assert first["x"].numpy().tolist() == [0, 1, 2, 3]


def test_bad_features():
    with pytest.raises(DataError, match=r"different numbers of examples: \{'x': 3, 'y': 2\}"):
        make_dataset({"x": np.arange(3), "y": np.arange(2)}, 2)
    with pytest.raises(DataError, match=r"batch_size must be >= 1; got 0"):
        make_dataset({"x": np.arange(3)}, 0)
