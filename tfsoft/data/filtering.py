"""k-core filtering of interaction logs."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from tfsoft.errors import DataError


@dataclass(frozen=True)
class KCoreReport:
    """What :func:`k_core` removed."""

    iterations: int
    removed_interactions: int
    removed_users: int
    removed_items: int


def k_core(
    interactions: pd.DataFrame, min_user_interactions: int = 0, min_item_interactions: int = 0
) -> tuple[pd.DataFrame, KCoreReport]:
    """Keep only users and items with at least the given number of interactions.

    Removing rare items can push users below their threshold and vice versa, so the two
    filters alternate until neither removes anything (the k-core fixed point).

    Args:
        interactions: canonical interactions (columns ``user`` and ``item``).
        min_user_interactions: users with fewer interactions are dropped (0 or 1 = keep all).
        min_item_interactions: items with fewer interactions are dropped.

    Returns:
        The filtered interactions (order preserved) and a :class:`KCoreReport`.

    Raises:
        DataError: nothing is left after filtering.
    """
    if min_user_interactions < 0 or min_item_interactions < 0:
        raise ValueError("k-core thresholds must be >= 0")
    frame = interactions
    users_before, items_before = frame["user"].nunique(), frame["item"].nunique()
    iterations = 0
    while True:
        iterations += 1
        keep = pd.Series(True, index=frame.index)
        if min_user_interactions > 1:
            keep &= frame.groupby("user", sort=False)["user"].transform("size") >= min_user_interactions
        if min_item_interactions > 1:
            keep &= frame.groupby("item", sort=False)["item"].transform("size") >= min_item_interactions
        if keep.all():
            break
        frame = frame[keep]
    if frame.empty:
        raise DataError(
            f"k-core filtering (users >= {min_user_interactions}, items >= {min_item_interactions} "
            f"interactions) removed all {len(interactions)} interactions; lower the thresholds"
        )
    report = KCoreReport(
        iterations=iterations,
        removed_interactions=len(interactions) - len(frame),
        removed_users=users_before - frame["user"].nunique(),
        removed_items=items_before - frame["item"].nunique(),
    )
    return frame.reset_index(drop=True), report
