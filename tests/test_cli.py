"""``tfsoft train`` / ``tfsoft evaluate``: the run directory, config errors, ``--set``,
determinism, Ctrl-C, and the console script. Tiny budgets (1 epoch of 20 steps, d = 16) on
the real lastfm_small data; commands run in-process through ``main(argv)`` except one."""

import csv
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.bench_helpers import load_bench
from tfsoft import train_run as train_run_module
from tfsoft.backend import keras
from tfsoft.cli import main
from tfsoft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lastfm_in_batch.yaml"
TINY = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=20", "--set", "model.embedding_dim=16"]
HEADLINE = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20")


@pytest.fixture(scope="module", autouse=True)
def _restore_op_determinism():
    """``tfsoft train`` turns on deterministic ops for the whole process; leave it as found."""
    from tensorflow.python.framework import config as tf_config

    enabled = tf_config.is_op_determinism_enabled()
    yield
    if not enabled:
        tf_config.disable_op_determinism()


def train(*argv) -> int:
    return main(["train", "--config", str(CONFIG), *map(str, argv)])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "lastfm"
    assert train("--run-dir", path, *TINY) == 0
    return path


def evaluate_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------- the run directory
def test_train_writes_every_file_of_the_run_directory(run_dir):
    for name in ("config.yaml", "user_vocabulary.json", "item_vocabulary.json", "checkpoints/best.weights.h5",
                 "checkpoints/last.weights.h5", "metrics.json", "history.csv", "plots/training.png",
                 "plots/long_tail.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert not list(run_dir.rglob(".*.tmp*")), "temporary files left behind"
    for png in ("training.png", "long_tail.png"):
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = load_config(run_dir / "config.yaml")  # the resolved config validates and holds the --set values
    assert (config.train.epochs, config.train.steps_per_epoch, config.model.embedding_dim) == (1, 20, 16)
    assert (config.data.path, config.data.window, config.loss.name) == ("lastfm_small", 20, "in_batch")
    items = json.loads((run_dir / "item_vocabulary.json").read_text())
    assert len(items["tokens"]) == 3646 and items["oov_index"] == 0

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 1 and metrics["train_seconds"] > 0
    for split in ("validation", "test"):
        assert set(HEADLINE) <= set(metrics[split]) and metrics[split]["num_queries"] == 3173
        assert all(0 <= metrics[split][name] <= 1 for name in HEADLINE)
        tail = metrics[split]["long_tail_recall"]["10"]
        assert len(tail) == 10 and sum(tail) == pytest.approx(metrics[split]["recall@10"])

    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert float(rows[0]["val_ndcg@10"]) == pytest.approx(metrics["validation"]["ndcg@10"])
    assert {"loss", "seconds", "val_recall@10", "val_recall@20", "val_ndcg@20"} <= set(rows[0])


def test_evaluate_reproduces_metrics_json_exactly(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert evaluate_json(capsys, "--run-dir", run_dir, "--split", "test") == {"test": metrics["test"]}
    assert evaluate_json(capsys, "--run-dir", run_dir, "--split", "validation") == {"validation": metrics["validation"]}


def test_console_script_evaluates_the_run_in_a_fresh_process(run_dir):
    script = shutil.which("tfsoft", path=str(Path(sys.executable).parent))
    assert script, f"the tfsoft console script is not installed next to {sys.executable}"
    done = subprocess.run([script, "evaluate", "--run-dir", str(run_dir)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads(done.stdout) == {"validation": metrics["validation"], "test": metrics["test"]}


def test_same_config_and_seed_give_the_same_metrics(run_dir, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    (again / "notes.txt").write_text("kept")  # --overwrite replaces run files only
    assert train("--run-dir", again, *TINY, "--overwrite") == 0
    first, second = (json.loads((path / "metrics.json").read_text()) for path in (run_dir, again))
    for key in ("validation", "test", "best_epoch", "train_examples"):
        assert first[key] == second[key], key
    assert (again / "notes.txt").read_text() == "kept"


def test_ctrl_c_during_fit_leaves_a_usable_last_checkpoint(tmp_path, monkeypatch, capsys):
    class CtrlC(keras.callbacks.Callback):
        """Presses Ctrl-C in the middle of the second epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(train_run_module, "train_run", functools.partial(train_run_module.train_run, callbacks=[CtrlC()]))
    run = tmp_path / "interrupted"
    code = train("--run-dir", run, "--set", "train.epochs=3", "--set", "train.steps_per_epoch=5",
                 "--set", "model.embedding_dim=16")
    error = capsys.readouterr().err
    assert code == 130
    assert "tfsoft: interrupted: training interrupted in epoch 2 of 3" in error and "Traceback" not in error
    assert f"last epoch 1: {run / 'checkpoints' / 'last.weights.h5'}" in error
    assert f"tfsoft evaluate --run-dir {run}" in error
    assert (run / "checkpoints" / "last.weights.h5").is_file() and not (run / "metrics.json").exists()
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header + the completed epoch
    result = evaluate_json(capsys, "--run-dir", run, "--checkpoint", "last")
    assert set(HEADLINE) <= set(result["validation"]) and result["test"]["num_queries"] == 3173


# --------------------------------------------------------------------------- input errors
def write_config(tmp_path, payload: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


@pytest.mark.parametrize("payload, overrides, message", [
    ({"train": {"epoch": 3}}, [],
     "unknown key 'train.epoch'; allowed keys in train: epochs, batch_size, learning_rate"),
    ({"loss": {"name": "softmax"}}, [],
     "'loss': unknown loss 'softmax'; registered: full_softmax, sampled_softmax, in_batch, bpr, bce"),
    ({"loss": {"name": "bpr", "temperature": 0.1}}, [],
     "'loss': key 'temperature' is not read by loss 'bpr'; loss 'bpr' reads: name, proposal, mask_seen, num_negatives"),
    ({}, ["model.query_tower.num_layers=3"],
     "--set model.query_tower.num_layers=3: unknown key 'model.query_tower.num_layers'; allowed keys in "
     "model.query_tower: name, history_exponent, use_user_embedding"),
    ({"distribute": {"strategy": "tpu"}}, [],
     "'distribute.strategy': got 'tpu'; input should be 'default', 'mirrored' or 'multi_worker'"),
    ({"train": {"batch_size": "many"}}, [], "'train.batch_size': Input should be a valid integer"),
    ({"loss": {"temperature": -1}}, [], "'loss.temperature': Input should be greater than 0 (got -1)"),
    ({"train": {"monitor": "val_ndcg@5"}}, [], "train.monitor: got 'val_ndcg@5'; the epoch logs report loss, val_recall@10"),
    ({"data": {"path": "nowhere/ratings.csv"}}, [],
     "data.path: 'nowhere/ratings.csv' is neither a registered dataset (lastfm_small, ml-100k, ml-1m) nor an existing file"),
    ({}, ["train.epoch=3"],
     "--set train.epoch=3: unknown key 'train.epoch'; allowed keys in train: epochs, batch_size"),
    ({}, ["model.towers.dim=3"], "--set model.towers.dim=3: unknown key 'model.towers'; allowed keys in model: query_tower"),
    ({}, ["train.dense_gradients=sometimes"],
     "'train.dense_gradients': got 'sometimes'; input should be 'auto', 'always' or 'never'"),
    ({}, ["train.epochs=three"], "'train.epochs': Input should be a valid integer, unable to parse string as an integer"),
    ({}, ["train.epochs"], "--set expects dotted.key=value (e.g. train.epochs=3); got 'train.epochs'"),
])
def test_config_errors_exit_2_with_a_message_naming_the_key(tmp_path, capsys, payload, overrides, message):
    config = write_config(tmp_path, payload)
    run = tmp_path / "run"
    sets = [part for override in overrides for part in ("--set", override)]
    code = main(["train", "--config", str(config), "--run-dir", str(run), *sets])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("tfsoft: error: ") and message in error, error
    assert "Traceback" not in error and not run.exists()


def test_missing_config_file_and_non_empty_run_dir_are_errors(run_dir, tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--run-dir", str(tmp_path / "run")]) == 2
    assert f"tfsoft: error: config file '{tmp_path / 'missing.yaml'}' does not exist" in capsys.readouterr().err
    before = (run_dir / "metrics.json").read_bytes()
    assert train("--run-dir", run_dir, *TINY) == 2
    assert f"tfsoft: error: run directory '{run_dir}' is not empty" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_bytes() == before
    assert main(["evaluate", "--run-dir", str(tmp_path)]) == 2
    assert "is not a tfsoft run directory: config.yaml is missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------- configs
def test_set_overrides_nested_keys_with_type_coercion():
    config = load_config(CONFIG, ["train.epochs=3", "loss.log_q_correction=false", "loss.log_q_correction=true",
                                  "train.learning_rate=1e-2", "data.window=null", "evaluation.ks=[5, 10]",
                                  "train.monitor=val_recall@5", "model.embedding_dim=32", "data.delimiter=,"])
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.loss.log_q_correction is True  # the last --set of a key wins
    assert config.train.learning_rate == 0.01 and isinstance(config.train.learning_rate, float)
    assert config.data.window is None and config.evaluation.ks == (5, 10)
    assert config.model.embedding_dim == 32 and config.data.delimiter == ","
    assert config.train.batch_size == 256  # untouched keys keep the file's values
    assert load_config(CONFIG, ["loss.log_q_correction=false"]).loss.log_q_correction is False


def test_every_yaml_in_configs_validates():
    paths = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        load_config(path)
    default = load_config(CONFIG)
    assert (default.data.path, default.data.split, default.data.window, default.data.max_history) == \
        ("lastfm_small", "leave_one_out", 20, 20)
    assert (default.model.query_tower.name, default.model.embedding_dim, default.model.similarity) == \
        ("history_pooling", 64, "cosine")
    assert (default.loss.name, default.loss.temperature) == ("in_batch", 0.1)
    assert (default.train.optimizer, default.train.learning_rate, default.train.batch_size, default.train.epochs,
            default.train.early_stopping_patience) == ("adam", 1e-3, 256, 40, 5)


def test_loss_configs_match_the_loss_benchmark_variants():
    bench = load_bench("bench_losses")
    assert sorted(path.stem for path in (ROOT / "configs" / "losses").glob("*.yaml")) == sorted(bench.VARIANTS)
    for name, (loss, model) in bench.VARIANTS.items():
        config = load_config(ROOT / "configs" / "losses" / f"{name}.yaml")
        assert {key: getattr(config.loss, key) for key in loss} == loss, name
        assert {key: getattr(config.model, key) for key in model} == model, name
        assert (config.model.query_tower.name, config.model.embedding_dim, config.data.window) == ("history_pooling", 64, 20)


def test_tower_configs_match_the_tower_benchmark_variants():
    bench = load_bench("bench_towers")
    variants = {name: payload for part in bench.PARTS.values() for name, payload in part.items()
                if "loss" in payload}  # the untrained baselines (popularity, item_knn) have no recipe
    assert sorted(path.stem for path in (ROOT / "configs" / "towers").glob("*.yaml")) == sorted(variants)
    for name, payload in variants.items():
        config = load_config(ROOT / "configs" / "towers" / f"{name}.yaml")
        for section, values in payload.items():
            dumped = getattr(config, section).model_dump()
            got = {key: dumped[key] for key in values}
            for key, value in values.items():  # a component given as a mapping: compare the keys it sets
                if isinstance(value, dict):
                    got[key] = {k: got[key][k] for k in value}
            assert {k: tuple(v) if isinstance(v, list) else v for k, v in got.items()} == \
                {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, (name, section)


# ------------------------------------------------------------------------------ recommend
def test_recommend_answers_a_retrieval_query_for_one_user(run_dir, capsys):
    capsys.readouterr()
    assert main(["recommend", "--run-dir", str(run_dir), "--user", "1", "--k", "10", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["user"] == 1 and len(answer["items"]) == 10 and len(set(answer["items"])) == 10
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    from tfsoft.training import prepare_data

    assert not set(answer["items"]) & set(prepare_data(load_config(run_dir / "config.yaml").data)
                                          .interactions.query("user == 1")["item"])  # seen items skipped
    assert None not in answer["items"]


def test_recommend_unknown_user_is_a_clear_error(run_dir, capsys):
    capsys.readouterr()
    assert main(["recommend", "--run-dir", str(run_dir), "--user", "no-such-user"]) == 2
    assert "user 'no-such-user' is not in the run's user vocabulary" in capsys.readouterr().err


def test_recommend_through_the_export_answers_like_the_checkpoint(run_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", "--run-dir", str(run_dir), "--export-dir", str(tmp_path), "--k", "30"]) == 0
    capsys.readouterr()
    answers = []
    for extra in ([], ["--export-dir", str(tmp_path)]):
        assert main(["recommend", "--run-dir", str(run_dir), "--user", "1", "--k", "10", "--json", *extra]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[1]["export_version"] == 1
    assert answers[1]["items"] == answers[0]["items"]
    np.testing.assert_allclose(answers[1]["scores"], answers[0]["scores"], rtol=1e-4, atol=1e-5)
    assert main(["recommend", "--run-dir", str(run_dir), "--user", "1", "--k", "31", "--export-dir",
                 str(tmp_path)]) == 2
    assert "returns the top 30; ask for --k 30 or less" in capsys.readouterr().err
