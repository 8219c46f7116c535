"""A small ragged array of int ids: flat values plus row offsets (CSR layout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths stored as ``values`` and ``offsets`` (row i is
    ``values[offsets[i]:offsets[i + 1]]``).

    Example:
        >>> rows = Ragged.from_rows([[1, 2], [], [3]])
        >>> len(rows), rows[0].tolist(), rows.lengths.tolist()
        (3, [1, 2], [2, 0, 1])
    """

    values: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != len(self.values):
            raise ValueError(f"offsets end at {self.offsets[-1]} but there are {len(self.values)} values")

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence], dtype=np.int64) -> "Ragged":
        rows = [np.asarray(row, dtype=dtype) for row in rows]
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate(rows).astype(dtype) if rows else np.zeros(0, dtype=dtype)
        return cls(values=values, offsets=offsets)

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> "Ragged":
        offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)
        return cls(values=np.asarray(values), offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row] : self.offsets[row + 1]]

    def __iter__(self):
        for row in range(len(self)):
            yield self[row]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_ids(self) -> np.ndarray:
        """Row number of every value (length ``len(values)``)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def map_values(self, table: np.ndarray) -> "Ragged":
        """Same rows with every value ``v`` replaced by ``table[v]``."""
        return Ragged(values=np.asarray(table)[self.values], offsets=self.offsets)

    def to_list(self) -> list[list]:
        return [row.tolist() for row in self]
