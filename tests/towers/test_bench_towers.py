"""bench/bench_towers.py's bookkeeping: a finished (variant, seed) is written at once and skipped
when the command runs again, ``--fresh`` reruns it, ML-1M moves the per-sequence towers to
windows of 50 and the per-interaction ones to its interactions. Training is replaced by a stub
that records what it was asked to run."""

import json
import sys

import pytest

from tests.bench_helpers import load_bench


@pytest.fixture
def bench(monkeypatch):
    module = load_bench("bench_towers")
    calls = []

    def fake_run(config, prepared):
        calls.append((config.model.query_tower.name, config.train.seed))
        return {"seed": config.train.seed, "max_epochs": config.train.epochs, "best_epoch": 1, "epochs_run": 1,
                "train_seconds": 0.0, "seconds_per_epoch": 0.5, "seconds": 0.0,
                "test": {"recall@10": 0.1 + config.train.seed, "ndcg@10": 0.05, "recall@20": 0.2, "ndcg@20": 0.1},
                "validation": {}, "test_long_tail_recall@10": 0.0}

    monkeypatch.setattr(module, "run_one", fake_run)
    monkeypatch.setattr(module, "prepare_data", lambda data: object())
    module.calls = calls
    return module


def run(bench, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["bench_towers.py", *argv])
    bench.main()


def test_finished_runs_are_kept_and_skipped(bench, monkeypatch, tmp_path):
    out = tmp_path / "towers.json"
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--seeds", "0", "--out", str(out))
    assert bench.calls == [("narm", 0)]
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "nfm", "--seeds", "0", "1",
        "--out", str(out))
    assert bench.calls == [("narm", 0), ("narm", 1), ("nfm", 0), ("nfm", 1)]  # narm seed 0 not rerun
    result = json.loads(out.read_text())["results"]
    assert [r["seed"] for r in result["narm"]["runs"]] == [0, 1]
    assert result["narm"]["test_recall@10"]["mean"] == pytest.approx(0.6)
    assert result["narm"]["seconds_per_epoch"]["mean"] == 0.5
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--seeds", "1", "--fresh",
        "--out", str(out))
    assert bench.calls[-1] == ("narm", 1) and len(bench.calls) == 5
    assert "nfm" in json.loads(out.read_text())["results"]  # other variants kept


def test_ml1m_moves_every_trained_tower_to_its_ml1m_data(bench, monkeypatch, tmp_path):
    specs = bench.variant_specs("sequential", "ml-1m")
    assert specs["narm"]["data"]["example_mode"] == "window"  # a query per position of windows of 50
    assert specs["caser"]["data"]["example_mode"] == "position"  # one example per interaction
    assert {spec["data"]["path"] for spec in specs.values()} == {"ml-1m"}
    assert {spec["data"]["max_history"] for spec in specs.values()} == {50}
    assert bench.PARTS["sequential"]["caser"]["data"]["path"] == "lastfm_small"  # the table is not changed
    with pytest.raises(SystemExit, match="only the sequential part"):
        bench.variant_specs("graph", "ml-1m")
    with pytest.raises(SystemExit, match="unknown for part sequential on ml-1m"):
        run(bench, monkeypatch, "--part", "sequential", "--dataset", "ml-1m", "--variants", "nope",
            "--out", str(tmp_path / "x.json"))


def test_a_screen_with_overrides_is_kept_apart_from_the_recipe(bench, monkeypatch, tmp_path):
    out = tmp_path / "screen.json"
    seen = []
    recorded = bench.run_one

    def spy(config, prepared):
        seen.append((config.train.learning_rate, config.model.query_tower.dropout))
        return recorded(config, prepared)

    monkeypatch.setattr(bench, "run_one", spy)
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--seeds", "0", "--out", str(out))
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--seeds", "0", "--out", str(out),
        "--set", "train.learning_rate=0.01", "--set", "model.query_tower.dropout=0.3")
    assert seen == [(0.003, 0.5), (0.01, 0.3)]
    result = json.loads(out.read_text())["results"]
    key = "narm[train.learning_rate=0.01,model.query_tower.dropout=0.3]"
    assert set(result) == {"narm", key}
    assert result[key]["config"]["train"]["learning_rate"] == 0.01
    assert result["narm"]["config"]["model"]["query_tower"]["dropout"] == 0.5
    from tfsoft.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown key 'train.learnin_rate'"):
        run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--out", str(out),
            "--set", "train.learnin_rate=0.003")


def test_a_write_keeps_what_another_process_wrote_meanwhile(bench, monkeypatch, tmp_path):
    out = tmp_path / "shared.json"
    run(bench, monkeypatch, "--part", "sequential", "--variants", "narm", "--seeds", "0", "--out", str(out))
    original_run = bench.run_one

    def run_while_another_process_writes(config, prepared):
        # between this process reading --out and writing its own run, another one adds a variant
        payload = json.loads(out.read_text())
        payload["results"]["caser"] = {"runs": [{"seed": 0}]}
        out.write_text(json.dumps(payload))
        return original_run(config, prepared)

    monkeypatch.setattr(bench, "run_one", run_while_another_process_writes)
    run(bench, monkeypatch, "--part", "sequential", "--variants", "nfm", "--seeds", "0", "--out", str(out))
    assert set(json.loads(out.read_text())["results"]) == {"narm", "caser", "nfm"}


def test_two_processes_on_seeds_of_one_variant_keep_both(bench, monkeypatch, tmp_path):
    """Two processes running seeds 1 and 2 of the same variant: the second write keeps the run
    the first one wrote meanwhile (its entry is merged by seed, not replaced)."""
    out = tmp_path / "shared.json"
    run(bench, monkeypatch, "--part", "sequential", "--variants", "nfm", "--seeds", "0", "--out", str(out))
    original_run = bench.run_one

    def run_while_another_process_writes(config, prepared):
        payload = json.loads(out.read_text())
        other = dict(payload["results"]["nfm"]["runs"][0], seed=1)
        payload["results"]["nfm"]["runs"].append(other)
        out.write_text(json.dumps(payload))
        return original_run(config, prepared)

    monkeypatch.setattr(bench, "run_one", run_while_another_process_writes)
    run(bench, monkeypatch, "--part", "sequential", "--variants", "nfm", "--seeds", "2", "--out", str(out))
    entry = json.loads(out.read_text())["results"]["nfm"]
    assert [r["seed"] for r in entry["runs"]] == [0, 1, 2]
    assert len(entry["test_recall@10"]["values"]) == 3
