"""Run directories: one check of a run (and its messages) for every reader, and only the chief
writes a run directory."""

from pathlib import Path

import pytest

from tfsoft.errors import RunError
from tfsoft.runs import require_run

ROOT = Path(__file__).resolve().parents[1]


def fake_run(root: Path, *, best=True, last=True, metrics=True) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text("{}\n")
    for name, present in (("best", best), ("last", last)):
        if present:
            (root / "checkpoints" / f"{name}.weights.h5").write_bytes(b"")
    if metrics:
        (root / "metrics.json").write_text("{}")
    return root


def test_require_run_names_what_is_missing_and_why(tmp_path):
    with pytest.raises(RunError, match=r"run directory '.*nowhere' does not exist"):
        require_run(tmp_path / "nowhere")
    with pytest.raises(RunError, match=r"is not a tfsoft run directory: config.yaml is missing"):
        require_run(tmp_path)
    completed = fake_run(tmp_path / "completed", best=False)
    with pytest.raises(RunError, match=r"best.weights.h5' is missing from a completed run \(metrics.json exists, so "
                                       r"it was written and later deleted or moved\); --checkpoint last exists"):
        require_run(completed, "best")
    interrupted = fake_run(tmp_path / "interrupted", best=False, metrics=False)
    with pytest.raises(RunError, match=r"the run was interrupted before it wrote a best checkpoint; --checkpoint last"):
        require_run(interrupted, "best")
    assert require_run(completed, "last").root == completed


def test_open_run_checks_before_reading_data_or_loading_a_model(tmp_path):
    from tfsoft.loaded_run import open_run

    with pytest.raises(RunError, match="config.yaml is missing"):
        open_run(tmp_path)
    run = open_run(fake_run(tmp_path / "run"), "best")
    assert run.config.model.query_tower.name == "history_pooling" and "prepared" not in vars(run)


def test_only_the_chief_writes_the_run_directory(tmp_path, monkeypatch):
    from tfsoft import distribute
    from tfsoft.config import load_config
    from tfsoft.train_run import train_run

    written = []
    original = distribute.write_dir

    def spy(root, strategy=None):
        context = original(root, strategy)

        class Spy:
            def __enter__(self):
                directory = context.__enter__()
                written.append(directory)
                return directory

            def __exit__(self, *exc):
                return context.__exit__(*exc)

        return Spy()

    monkeypatch.setattr(distribute, "is_chief", lambda strategy=None: False)
    monkeypatch.setattr(distribute, "is_chief_task", lambda *args: False)
    monkeypatch.setattr(distribute, "write_dir", spy)
    config = load_config(ROOT / "configs" / "lastfm_in_batch.yaml",
                         ["train.epochs=1", "train.steps_per_epoch=3", "model.embedding_dim=8"])
    metrics = train_run(config, tmp_path / "run", stream=open("/dev/null", "w"))
    assert metrics["test"]["num_queries"] > 0
    assert not (tmp_path / "run").exists()  # a worker trains, writes its copies elsewhere, keeps nothing
    assert len(written) == 1 and written[0] != tmp_path / "run" and not written[0].exists()
