"""Which shard a user belongs to: a stable 64-bit hash of the user id, modulo the shard count.

``tfsoft retrieve --shard i/n`` keeps the users whose ``hash(user_id) mod n == i``. The hash
depends only on the id (not on the file, its order or the Python process), so ``n`` jobs over
the same input split the users into ``n`` disjoint sets whatever the order of the files, and
their union is the unsharded output.

* int64 ids: SplitMix64's finaliser (Steele, Lea & Flood, "Fast splittable pseudorandom number
  generators", OOPSLA 2014; the ``mix64`` of Java's ``SplittableRandom``) of ``id + γ``,
  ``γ = 0x9E3779B97F4A7C15``, in wrapping uint64 arithmetic: vectorised NumPy.
* string ids: the first 8 bytes (little-endian) of ``BLAKE2b(utf-8(id), digest_size=8)``.

Rows whose user id cannot be read (null, malformed) have no hash: they belong to shard 0, so
each lands in exactly one shard's rejects.

Example:
    >>> ShardSpec.parse("3/8")
    ShardSpec(index=3, count=8)
    >>> shard_of(np.array([1, 2, 3], np.int64), 1).tolist()
    [0, 0, 0]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from tfsoft.errors import ConfigError

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "ShardSpec":
        """``"i/n"`` -> ShardSpec(i, n); ``None`` -> the whole input (0/1)."""
        if text is None:
            return cls()
        index, slash, count = str(text).partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"--shard must look like INDEX/COUNT (e.g. 3/8, index counted from 0); got {text!r}")
        spec = cls(int(index), int(count))
        if spec.count < 1 or not 0 <= spec.index < spec.count:
            raise ConfigError(f"--shard {text}: the index must be in 0..COUNT-1 and COUNT >= 1")
        return spec

    @property
    def label(self) -> str:
        """``00003-of-00008``: the shard's part of every file name it writes."""
        return f"{self.index:05d}-of-{self.count:05d}"


def hash_int_ids(ids: np.ndarray) -> np.ndarray:
    """SplitMix64 of int64 ids: [N] uint64 (module docstring)."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, dtype=np.int64).view(np.uint64) + GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_string_ids(ids) -> np.ndarray:
    """BLAKE2b-64 of each string id's UTF-8 bytes: [N] uint64 (module docstring)."""
    out = np.empty(len(ids), dtype=np.uint64)
    for position, value in enumerate(ids):
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        out[position] = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return out


def shard_of(ids, count: int) -> np.ndarray:
    """[N] int64 shard of each user id: ``hash(id) mod count`` (int64 or string ids)."""
    ids = np.asarray(ids)
    hashed = hash_int_ids(ids) if ids.dtype.kind in "iu" else hash_string_ids(ids)
    return (hashed % np.uint64(count)).astype(np.int64)
