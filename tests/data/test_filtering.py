import pandas as pd
import pytest

from tfsoft.data import k_core
from tfsoft.errors import DataError


def frame(pairs):
    return pd.DataFrame(pairs, columns=["user", "item"])


def test_k_core_iterates_to_fixed_point():
    # Hand-computed: item z has 1 interaction -> removed; then user c has 1 -> removed;
    # then item y has 1 (only b) -> removed; then b has 1 -> removed. a stays with x (2 users: a, d).
    data = frame([("a", "x"), ("a", "w"), ("b", "y"), ("b", "x"), ("c", "y"), ("c", "z"),
                  ("d", "x"), ("d", "w")])
    out, report = k_core(data, min_user_interactions=2, min_item_interactions=2)
    assert sorted(map(tuple, out[["user", "item"]].values.tolist())) == [("a", "w"), ("a", "x"), ("d", "w"), ("d", "x")]
    assert report.removed_users == 2 and report.removed_items == 2 and report.removed_interactions == 4
    assert report.iterations >= 3
    # Fixed point: applying again removes nothing.
    again, second = k_core(out, 2, 2)
    assert len(again) == len(out) and second.removed_interactions == 0


def test_k_core_keeps_order_and_everything_when_thresholds_are_low():
    data = frame([("a", "x"), ("b", "y")])
    out, report = k_core(data, 1, 0)
    assert out.equals(data) and report.removed_interactions == 0


def test_k_core_that_removes_everything_says_so():
    with pytest.raises(DataError, match=r"removed all 2 interactions; lower the thresholds"):
        k_core(frame([("a", "x"), ("b", "y")]), 2, 2)


def test_lastfm_is_already_5_core(lastfm):
    out, report = k_core(lastfm, 5, 5)
    assert report.removed_interactions == 0 and len(out) == 52551
