"""Id vocabularies: raw user/item ids <-> contiguous indices, with an out-of-vocabulary row.

Index 0 is reserved: it is the out-of-vocabulary (OOV) bucket for unknown ids and the padding
token of left-padded histories, so towers mask it and the evaluator never recommends it.
Known ids take indices ``1 .. size``. Item vocabularies are ordered by training frequency
(most frequent first, ties by first appearance), which is the order log-uniform (Zipf)
negative samplers assume. Vocabularies are saved with a run so serving can map raw ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from tfsoft.errors import DataError
from tfsoft.files import atomic_write_json

OOV_INDEX = 0
PAD_INDEX = 0


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of raw ids; ``tokens[i]`` has index ``i + 1`` (index 0 is OOV/padding).

    Example:
        >>> vocab = Vocabulary.build(["b", "a", "b"], order="frequency")
        >>> vocab.lookup(["a", "b", "zzz"]).tolist()
        [2, 1, 0]
    """

    name: str
    tokens: tuple
    dtype: str  # "int64" or "string"

    @classmethod
    def build(cls, values: Iterable, *, name: str = "ids", order: str = "appearance") -> "Vocabulary":
        """Build from a column of raw ids.

        Args:
            values: raw ids (ints or strings), in time order.
            name: what the ids are ("user", "item"), used in messages and file names.
            order: ``"appearance"`` (first appearance) or ``"frequency"`` (descending count,
                ties by first appearance).
        """
        series = pd.Series(list(values) if not isinstance(values, (pd.Series, np.ndarray)) else values)
        if series.empty:
            raise DataError(f"cannot build the {name} vocabulary from no ids")
        codes, uniques = pd.factorize(series, sort=False)
        if order == "frequency":
            counts = np.bincount(codes, minlength=len(uniques))
            ranking = np.lexsort((np.arange(len(uniques)), -counts))
            uniques = uniques[ranking]
        elif order != "appearance":
            raise ValueError(f"order must be 'appearance' or 'frequency', got {order!r}")
        is_int = pd.api.types.is_integer_dtype(np.asarray(uniques).dtype)
        tokens = tuple(int(t) for t in uniques) if is_int else tuple(str(t) for t in uniques)
        return cls(name=name, tokens=tokens, dtype="int64" if is_int else "string")

    @property
    def size(self) -> int:
        """Number of known ids (the OOV row is not counted)."""
        return len(self.tokens)

    @property
    def num_indices(self) -> int:
        """Rows an embedding table needs: known ids plus the OOV/padding row."""
        return len(self.tokens) + 1

    def _index(self) -> pd.Index:
        cached = self.__dict__.get("_cached_index")
        if cached is None:
            cached = pd.Index(self.tokens)
            object.__setattr__(self, "_cached_index", cached)
        return cached

    def lookup(self, values: Iterable) -> np.ndarray:
        """Raw ids -> int64 indices; unknown ids (or ids of the wrong type) map to 0."""
        values = values if isinstance(values, (pd.Series, np.ndarray)) else list(values)
        if self.dtype == "int64":
            series = pd.Series(values)
            if not pd.api.types.is_integer_dtype(series.dtype):
                series = pd.to_numeric(series.astype(str), errors="coerce")
            positions = self._index().get_indexer(series)
        else:
            positions = self._index().get_indexer(pd.Series(values).astype(str))
        return (np.asarray(positions, dtype=np.int64) + 1).clip(min=OOV_INDEX)

    def ids(self, indices: Iterable[int]) -> list:
        """Indices -> raw ids; index 0 (and out-of-range indices) give ``None``."""
        out = []
        for index in indices:
            index = int(index)
            out.append(self.tokens[index - 1] if 1 <= index <= len(self.tokens) else None)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "oov_index": OOV_INDEX, "tokens": list(self.tokens)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON, atomically."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            dtype = payload["dtype"]
            tokens = payload["tokens"]
        except FileNotFoundError as error:
            raise DataError(f"vocabulary file '{path}' does not exist") from error
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"vocabulary file '{path}' is not a tfsoft vocabulary: {error}") from error
        if dtype not in ("int64", "string"):
            raise DataError(f"vocabulary file '{path}' has dtype {dtype!r}; expected 'int64' or 'string'")
        tokens = tuple(int(t) for t in tokens) if dtype == "int64" else tuple(str(t) for t in tokens)
        return cls(name=payload.get("name", path.stem), tokens=tokens, dtype=dtype)


def item_counts(item_indices: np.ndarray, num_indices: int) -> np.ndarray:
    """Interaction count per item index (length ``num_indices``; the OOV row counts 0)."""
    counts = np.bincount(np.asarray(item_indices, dtype=np.int64), minlength=num_indices)
    counts[OOV_INDEX] = 0
    return counts
