"""Stable user-id hashing and shard specs, against a plain-Python reference."""

import hashlib

import numpy as np
import pytest

from tfsoft.batch.sharding import ShardSpec, hash_int_ids, hash_string_ids, shard_of
from tfsoft.errors import ConfigError

MASK = (1 << 64) - 1


def splitmix64(value: int) -> int:
    """SplitMix64 (Steele et al. 2014) on Python ints: the reference."""
    z = (value + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_int_hash_is_splitmix64_including_negative_and_extreme_ids():
    ids = [0, 1, 2, 12345, -1, -(2 ** 63), 2 ** 63 - 1]
    got = hash_int_ids(np.asarray(ids, np.int64)).tolist()
    assert got == [splitmix64(i & MASK) for i in ids]
    assert splitmix64(0) == 0xE220A8397B1DCDAF  # the published first output of SplitMix64 seeded with 0


def test_string_hash_is_blake2b_of_utf8():
    ids = ["a", "user-42", "ü", ""]
    want = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in ids]
    assert hash_string_ids(np.asarray(ids, object)).tolist() == want


def test_shards_partition_users_independently_of_order(rng):
    ids = rng.integers(0, 10 ** 12, 5000)
    shards = shard_of(ids, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    assert np.bincount(shards).min() > 1100  # roughly even
    order = rng.permutation(len(ids))
    np.testing.assert_array_equal(shard_of(ids[order], 4), shards[order])
    assert shard_of(np.asarray(["x", "y"], object), 1).tolist() == [0, 0]


def test_shard_spec_parse():
    assert ShardSpec.parse("3/8") == ShardSpec(3, 8) and ShardSpec.parse(None) == ShardSpec(0, 1)
    assert ShardSpec(3, 8).label == "00003-of-00008"
    for bad in ("8/8", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            ShardSpec.parse(bad)
