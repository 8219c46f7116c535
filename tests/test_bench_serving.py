"""The serving benchmark's pieces on tiny catalogs (bench/bench_serving.py; the full run writes
bench/results/serving.json)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "bench_serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_data_is_normalised_clustered_and_exact_search_matches_numpy(bench):
    from tfsoft.backend import tf
    from tfsoft.topk import exact_top_k

    embeddings = bench.clustered_catalog(2000, num_clusters=20, seed=3)
    assert embeddings.shape == (2001, bench.DIM) and embeddings.dtype == np.float32
    assert not embeddings[0].any()  # OOV row
    np.testing.assert_allclose(np.linalg.norm(embeddings[1:], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(embeddings, bench.clustered_catalog(2000, num_clusters=20, seed=3))
    queries = bench.queries_near(embeddings, 50, seed=4)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    exact = bench.exact_neighbors(queries, embeddings, 10, chunk=16)
    assert exact.min() >= 1
    assert bench.recall(exact_top_k(tf.constant(queries), tf.constant(embeddings), 10)[0].numpy(), exact) > 0.99  # ties aside, the same sets
    # clustered: a query's best item is far closer than a random item (iid vectors would not be)
    best = (queries * embeddings[exact[:, 0]]).sum(1)
    assert best.mean() > 0.7
    assert bench.recall(exact[:, ::-1], exact) == 1.0
    assert bench.recall(np.zeros_like(exact), exact) == 0.0


def test_index_part_through_saved_models(bench, tmp_path):
    embeddings = bench.clustered_catalog(3000, num_clusters=30)
    tune, evaluate = bench.queries_near(embeddings, 100, seed=1), bench.queries_near(embeddings, 100, seed=2)
    exact = bench.exact_neighbors(evaluate, embeddings, bench.K)
    counts = {1: 5, 256: 1}
    brute = bench.bench_index("brute_force", embeddings, tune, evaluate, exact, 1, tmp_path, counts)
    assert brute["recall@10"] == pytest.approx(1.0)
    assert brute["size_bytes"] > embeddings[1:].nbytes and brute["qps"]["batch_256"]["qps"] > 0
    scann = bench.bench_index("scann", embeddings, tune, evaluate, exact, 1, tmp_path, counts, sweep=True)
    assert scann["recall@10"] >= 0.9 and scann["tuning"][-1]["recall"] >= 0.95
    assert scann["leaves_to_search"] == scann["tuning"][-1]["leaves_to_search"]
    assert [row["leaves_to_search"] for row in scann["sweep"]] == sorted(row["leaves_to_search"]
                                                                        for row in scann["sweep"])
    assert scann["qps"]["batch_1"]["batches_per_repeat"] == 5
    assert not list(tmp_path.iterdir())  # SavedModels removed after timing


def test_quick_run_writes_json_with_rest_latency(bench, tmp_path):
    out = tmp_path / "serving.json"
    payload = bench.main(["--quick", "--sizes", "2000", "--clusters", "20", "--repeats", "1", "--no-sweep",
                          "--rest-requests", "5", "--rest-catalog", "2000", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["index"][0]["items"] == 2000 and set(bench.KINDS) <= set(written["index"][0])
    rest = written["rest"]["synthetic_2k"]
    for kind in bench.KINDS:
        assert rest[kind]["requests"] == 5 and 0 < rest[kind]["p50_ms"] <= rest[kind]["p99_ms"]
    assert rest["scann"]["export"]["recall@100"] >= 0.9
    assert "shared machine" in written["note"].lower() and "iid" in written["data"]["iid_note"]
    assert "brute_force" in bench.table(payload)
