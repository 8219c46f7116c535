"""Inputs and comparisons shared by the batch job tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

UNKNOWN_ITEM = {"int64": 99_999, "string": "nope"}


def users_table(export, count: int, seed: int = 0, unknown_every: int = 7) -> pa.Table:
    """``count`` users with histories of catalog items; every ``unknown_every``-th user is cold
    (unknown id, history of unknown items only) and some histories hold unknown items."""
    rng = np.random.default_rng(seed)
    users, histories = [], []
    for i in range(count):
        cold = unknown_every and i % unknown_every == 3
        if export.dtype == "int64":
            users.append(10_000 + i if cold else (i % len(export.users)) + 1 + 1000 * (i // len(export.users)))
        else:
            users.append(f"new{i}" if cold else f"u{i + 1}")
        items = [export.items[j] for j in rng.integers(0, len(export.items), rng.integers(0, 8))]
        if not cold and rng.random() < 0.3:
            items.insert(0, UNKNOWN_ITEM[export.dtype])
        if cold:
            items = [UNKNOWN_ITEM[export.dtype]] * int(rng.integers(0, 3))
        histories.append(items)
    return pa.table({"user_id": users, "history": histories})


def read_output(out: Path) -> pa.Table:
    """Every result row of an output directory (dataset readers skip ``_*`` and ``.*``), sorted by user."""
    return ds.dataset(str(out), format="parquet").to_table().sort_by("user_id")


def read_rejects(out: Path) -> pa.Table:
    files = sorted((Path(out) / "_rejects").glob("*.parquet"))
    if not files:
        return pa.table({"row": pa.array([], pa.int64())})
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by([("file", "ascending"), ("row", "ascending")])


def assert_same_results(got: pa.Table, want: pa.Table, atol: float = 1e-5) -> None:
    """Same users, sources and items; scores within ``atol`` (items of equal score may swap)."""
    assert got.column("user_id").to_pylist() == want.column("user_id").to_pylist()
    assert got.column("source").to_pylist() == want.column("source").to_pylist()
    for a, b, sa, sb in zip(got.column("item_ids").to_pylist(), want.column("item_ids").to_pylist(),
                            got.column("scores").to_pylist(), want.column("scores").to_pylist()):
        assert (sa is None) == (sb is None)
        if sa is None:
            assert a == b
            continue
        np.testing.assert_allclose(sa, sb, atol=atol, rtol=0)
        swapped = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        assert all(abs(sa[i] - sb[i]) <= atol for i in swapped) and sorted(a) == sorted(b) or not swapped, (a, b)
