"""The soft-target overhead benchmark's smoke run (bench/bench_soft_target_overhead.py; the full run
writes bench/results/soft_target_overhead.json)."""

import json
from pathlib import Path

import pytest

from tests.bench_helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_soft_target_overhead")


def test_quick_run_writes_every_key(bench, tmp_path):
    out = tmp_path / "overhead.json"
    bench.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert {"benchmark", "command", "machine", "timing", "targets", "lastfm", "synthetic", "targets_met",
            "all_targets_met"} <= set(result)
    assert result["quick"] is True and "--quick" in result["command"]
    assert {"cpus", "tensorflow", "date"} <= set(result["machine"])

    teacher = result["lastfm"]["teachers"]["sasrec"]
    assert teacher["trained_here"] and Path(teacher["run"]).parent == tmp_path / "overhead_runs"
    group = result["lastfm"]["results"]["sasrec"]["in_batch"]
    assert set(group["times"]) == {"base", "label_smoothing", "popularity", "teacher", "teacher_forward"}
    for times in group["times"].values():
        assert len(times["wall_ms"]) == len(times["cpu_ms"]) == 2  # quick: 2 repeats
        assert times["median_ms"] > 0 and times["warmup_seconds"] > 0
    for name in ("label_smoothing", "popularity", "teacher"):
        assert {"of_medians", "median_of_paired", "of_minimums", "per_repeat",
                "cpu_of_medians"} <= set(group["overhead"][name])
    checks = group["targets_met"]
    assert set(checks) == {"label_smoothing_overhead_le_10pct", "popularity_overhead_le_10pct",
                           "label_smoothing_overhead_le_10pct_paired", "popularity_overhead_le_10pct_paired",
                           "teacher_le_base_plus_forward_plus_10pct_of_forward",
                           "teacher_le_110pct_of_base_plus_forward"}
    assert all(isinstance(value, bool) for value in checks.values())
    assert group["teacher"]["teacher_forward_ms"] == group["times"]["teacher_forward"]["median_ms"]
    assert result["targets_met"] == {"sasrec/in_batch": checks}

    synthetic = result["synthetic"]
    assert set(synthetic["results"]) == set(bench.SYNTHETIC_VARIANTS)
    for variant in synthetic["results"].values():
        assert variant["median_ms"] > 0 and len(variant["wall_ms"]) == 2
        assert variant["peak_rss_mib"] >= variant["rss_before_first_step_mib"] > 0
    assert {"full_over_in_batch_step_time_with_soft_targets", "popularity_overhead_full_softmax",
            "popularity_overhead_in_batch"} <= set(synthetic["comparison"])


def test_overheads_and_proc_status(bench):
    times = {"base": {"wall_ms": [10.0, 20.0], "median_ms": 15.0, "min_ms": 10.0, "median_cpu_ms": 30.0},
             "x": {"wall_ms": [11.0, 30.0], "median_ms": 20.5, "min_ms": 11.0, "median_cpu_ms": 33.0}}
    result = bench.overhead(times, "x")
    assert result["of_medians"] == pytest.approx(20.5 / 15 - 1)
    assert result["per_repeat"] == pytest.approx([0.1, 0.5])
    assert result["median_of_paired"] == pytest.approx(0.3)
    assert result["of_minimums"] == pytest.approx(0.1)
    assert result["cpu_of_medians"] == pytest.approx(0.1)
    if Path("/proc/self/status").is_file():
        assert bench.proc_status_kib("VmHWM") >= bench.proc_status_kib("VmRSS") > 0
    assert bench.proc_status_kib("NoSuchField") is None
