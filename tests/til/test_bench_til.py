"""The TIL benchmark's smoke run (bench/bench_til.py --quick; the full run writes
bench/results/til_lastfm.json). No wall-time assertion: only that every key is there."""

import json
from pathlib import Path

from tests.bench_helpers import load_bench


def test_quick_run_writes_every_key(tmp_path):
    bench = load_bench("bench_til")
    out = tmp_path / "til.json"
    bench.main(["--quick", "--backbones", "mf", "--variants", "bpr", "til_ui", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["quick"] is True and "--quick" in result["command"]
    assert {"benchmark", "machine", "protocol", "paper", "results", "time_per_epoch_relative_to_bpr",
            "table1_order", "weights_plot"} <= set(result)
    assert set(result["results"]) == {"mf/bpr", "mf/til_ui", "context/popularity", "context/item_knn"}
    for key in ("mf/bpr", "mf/til_ui"):
        entry = result["results"][key]
        assert {"test_recall@20", "test_ndcg@20", "median_epoch_seconds"} <= set(entry)
        (run,) = entry["runs"]
        assert len(run["epoch_seconds"]) == run["epochs_run"] == 2
    weights = result["results"]["mf/til_ui"]["runs"][0]["weights"]
    assert [epoch["epoch"] for epoch in weights] == [1, 2]
    assert sum(weights[0]["histogram"]) > 0 and set(weights[0]["quantiles"]) == {"5", "25", "50", "75", "95"}
    assert result["time_per_epoch_relative_to_bpr"]["mf/bpr"] == 1.0
    assert set(result["table1_order"]) == {"mf/recall@20", "mf/ndcg@20"}
    assert set(result["table1_order"]["mf/recall@20"]) == {"til_ui>bpr"}
    assert Path(result["weights_plot"]).is_file()
    # a rerun skips the runs the file already holds
    again = bench.main(["--quick", "--backbones", "mf", "--variants", "bpr", "--out", str(out)])
    assert len(again["results"]["mf/bpr"]["runs"]) == 1
