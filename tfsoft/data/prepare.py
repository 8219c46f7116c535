"""From a canonical interactions table to everything training and evaluation need.

``interactions -> k-core -> vocabularies -> per-user sequences -> split -> item counts``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tfsoft.data.features import FeatureTable
from tfsoft.data.filtering import KCoreReport, k_core
from tfsoft.data.ragged import Ragged
from tfsoft.data.splits import PROTOCOLS, Split, leave_one_out, ratio_split, temporal_split, time_quantiles
from tfsoft.data.vocabulary import Vocabulary, item_counts
from tfsoft.errors import DataError


@dataclass(frozen=True)
class SplitSpec:
    """How to split: protocol and its parameters.

    Attributes:
        protocol: ``leave_one_out`` | ``ratio`` | ``temporal``.
        window: leave-one-out only: cut histories into windows of this length first (CSRec).
        ratios: ratio only: (train, validation, test).
        seed: ratio only: shuffle seed.
        validation_start, test_start: temporal only: absolute time cutoffs; when omitted,
            ``validation_fraction``/``test_fraction`` of the interactions (by time) are held out.
    """

    protocol: str = "leave_one_out"
    window: int | None = None
    ratios: Sequence[float] = (0.8, 0.1, 0.1)
    seed: int = 0
    validation_start: float | None = None
    test_start: float | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass(frozen=True)
class PreparedData:
    """A split dataset in index space.

    Attributes:
        interactions: the k-core filtered canonical table (rows sorted by user, then time).
        users, items: vocabularies (index 0 = OOV/padding).
        split: the split, with item *indices* in place of row numbers.
        train_weights: per training interaction weight (same layout as ``split.train``), or None.
        item_counts: [items.num_indices] training interactions per item index.
        k_core: what filtering removed.
        user_features, item_features: optional side features aligned with the vocabularies.
    """

    interactions: pd.DataFrame
    users: Vocabulary
    items: Vocabulary
    split: Split
    train_weights: Ragged | None
    item_counts: np.ndarray
    k_core: KCoreReport
    user_features: "FeatureTable | None" = None
    item_features: "FeatureTable | None" = None

    def statistics(self) -> dict:
        lengths = self.interactions.groupby("user", sort=False).size()
        return {
            "interactions": int(len(self.interactions)),
            "users": int(self.users.size),
            "items": int(self.items.size),
            "density": float(len(self.interactions) / (self.users.size * self.items.size)),
            "interactions_per_user": {
                "min": int(lengths.min()), "median": float(lengths.median()), "max": int(lengths.max()),
            },
            "k_core_removed": self.k_core.__dict__,
            "split": self.split.summary(),
        }

    def save_vocabularies(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``user_vocabulary.json`` and ``item_vocabulary.json`` into ``directory``."""
        directory = Path(directory)
        return [self.users.save(directory / "user_vocabulary.json"), self.items.save(directory / "item_vocabulary.json")]


def prepare(
    interactions: pd.DataFrame,
    split: SplitSpec = SplitSpec(),
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> PreparedData:
    """Filter, index and split a canonical interactions table (see :mod:`tfsoft.data.reader`)."""
    if split.protocol not in PROTOCOLS:
        raise DataError(f"split protocol must be one of {', '.join(PROTOCOLS)}; got {split.protocol!r}")
    frame, report = k_core(interactions, min_user_interactions, min_item_interactions)
    users = Vocabulary.build(frame["user"], name="user", order="appearance")
    items = Vocabulary.build(frame["item"], name="item", order="frequency")
    user_index = users.lookup(frame["user"])
    item_index = items.lookup(frame["item"])
    # Rows are grouped by user (reader contract); keep that invariant even for DataFrames
    # filtered or built elsewhere.
    order = np.argsort(user_index, kind="stable")
    if not (order == np.arange(len(order))).all():
        frame = frame.iloc[order].reset_index(drop=True)
        user_index, item_index = user_index[order], item_index[order]
    sequence_users, lengths = np.unique(user_index, return_counts=True)
    rows = Ragged.from_lengths(np.arange(len(frame), dtype=np.int64), lengths)
    if split.protocol == "leave_one_out":
        row_split = leave_one_out(rows, sequence_users, window=split.window)
    elif split.protocol == "ratio":
        row_split = ratio_split(rows, sequence_users, split.ratios, seed=split.seed)
    else:
        if "timestamp" not in frame.columns:
            raise DataError("the temporal split needs a time column; set the time column of the data")
        times = frame["timestamp"].to_numpy()
        validation_start, test_start = split.validation_start, split.test_start
        if validation_start is None or test_start is None:
            quantile_validation, quantile_test = time_quantiles(times, split.validation_fraction, split.test_fraction)
            validation_start = quantile_validation if validation_start is None else validation_start
            test_start = quantile_test if test_start is None else test_start
        row_split = temporal_split(rows, sequence_users, times, validation_start, test_start)
    weights = None
    if "weight" in frame.columns:
        weights = row_split.train.map_values(frame["weight"].to_numpy(np.float32))
    index_split = row_split.map_rows(item_index)
    counts = item_counts(index_split.train.values, items.num_indices)
    return PreparedData(frame, users, items, index_split, weights, counts, report)
