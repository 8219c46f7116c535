"""The serving benchmarks' pieces on tiny catalogs (bench/bench_serving.py and
bench/bench_serving_load.py; the full runs write bench/results/serving.json and serving_load.json)."""

import json

import numpy as np
import pytest

from tests.bench_helpers import load_bench as load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("bench_serving")


@pytest.fixture(scope="module")
def load_bench():
    return load_bench_script("bench_serving_load")


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
        result = rest[kind]
        assert result["server"] == "process" and result["requests"] == 5
        assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] and result["server_rss_mb"] > 0
        stages = result["breakdown"]["stages"]
        assert set(stages) == {"parse_validate", "model_call", "serialise", "total", "query_tower"}
        assert stages["total"]["mean_ms"] == pytest.approx(sum(stages[name]["mean_ms"] for name in
                                                               ("parse_validate", "model_call", "serialise")))
        assert "http_overhead" in result["breakdown"] and result["export"]["warmup_records"] == 100
        assert result["in_process_server"]["server"] == "thread" and result["in_process_server"]["requests"] == 5
    assert rest["scann"]["export"]["recall@100"] >= 0.9
    assert "shared machine" in written["note"].lower() and "iid" in written["data"]["iid_note"]
    assert "brute_force" in bench.table(payload)


def test_load_benchmark_smoke(load_bench, tmp_path):
    """4 clients for 2 s against tfsoft serve (its own process), a version swap after 0.6 s: every valid
    request answered by one version, every invalid one its 4xx, the server's RSS read from /proc."""
    out = tmp_path / "serving_load.json"
    payload = load_bench.main(["--quick", "--clients", "4", "--seconds", "2", "--warmup-seconds", "0.3",
                               "--out", str(out)])
    assert json.loads(out.read_text())["result"]["requests_total"] == payload["result"]["requests_total"]
    result = payload["result"]
    assert result["clients"] == 4 and result["valid_requests"] > 20 and result["invalid_requests"] > 0
    assert result["failed_valid_requests"] == 0 and result["status_5xx"] == 0, result["failed_valid_examples"]
    assert result["invalid_unexpected_status"] == 0 and result["invalid_4xx"] == result["invalid_requests"]
    assert set(result["answers_by_version"]) <= {"1", "2"} and result["version_first_answer"] == 1
    assert result["swap"]["versions_written"]["2"]["published_s"] < 2
    assert result["memory"]["rss_start_mib"] > 0 and result["memory"]["rss_end_mib"] > 0
    assert result["server"]["exit_status_after_sigterm"] == 0 and result["server"]["log_traceback_lines"] == 0
    assert result["latency_valid"]["p50_ms"] <= result["latency_valid"]["p99_ms"]
    assert payload["acceptance"]["clients_at_least_64"] is False and payload["acceptance"]["all"] is False
    assert "load_average_end" in payload["machine"]


def test_answer_version_reads_the_version_from_the_item_ids(load_bench):
    offset = load_bench.VERSION_ID_OFFSET
    answer = lambda ids: json.dumps({"outputs": {"item_ids": [ids], "scores": [[0.0] * len(ids)]}}).encode()
    assert load_bench.answer_version(answer([3, 1, 2]), k=3) == 1
    assert load_bench.answer_version(answer([offset + 3, offset + 1, -1]), k=3) == 2
    with pytest.raises(ValueError, match="versions"):
        load_bench.answer_version(answer([3, offset + 1, 2]), k=3)
    with pytest.raises(ValueError, match="item ids"):
        load_bench.answer_version(answer([3, 1]), k=3)
