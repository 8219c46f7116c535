"""bench/bench_batch.py's quick mode end to end (tiny catalog; no timing is asserted)."""

import json

import numpy as np
import pytest

from tests.bench_helpers import load_bench


pytest.importorskip("apache_beam")


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_batch")


def test_clustered_blocks_are_contiguous_normalised_clusters(bench):
    embeddings, starts = bench.clustered_blocks(500, 10, seed=3)
    assert embeddings.shape == (501, bench.DIM) and not embeddings[0].any() and starts[0] == 1 and starts[-1] == 501
    np.testing.assert_allclose(np.linalg.norm(embeddings[1:], axis=1), 1.0, rtol=1e-5)
    block = embeddings[starts[0]:starts[1]]
    other = embeddings[starts[1]:starts[2]]
    assert (block @ block.T).mean() > (block @ other.T).mean() + 0.3  # items of a block are close


def test_quick_mode_writes_every_measurement(bench, tmp_path):
    out = tmp_path / "batch.json"
    assert bench.main(["--quick", "--catalogs", "synthetic_1000", "--users", "400", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    catalog = result["catalogs"]["synthetic_1000"]
    assert result["quick"] and catalog["items"] == 1000 and catalog["users"] == 400
    for kind in ("brute_force", "scann"):
        local = catalog[kind]["in_process"]
        assert local["users_per_second"] > 0 and set(local["fractions"]) == {"read", "embed", "search", "write"}
        assert sum(local["fractions"].values()) == pytest.approx(1.0, abs=1e-3)
        assert catalog[kind]["beam_direct"]["users"] == 400 and catalog[kind]["beam_direct"]["users_per_second"] > 0
    assert catalog["brute_force"]["in_process"]["users"] == 400
    assert 0.8 <= catalog["scann"]["recall@100_vs_brute_force"] <= 1.0
