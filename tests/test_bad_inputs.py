"""Bad inputs to the commands that read a run: each gets ``tfsoft: error: ...`` naming the file and
the cause, exit status 2, and no traceback; what needs no TensorFlow is refused before TensorFlow
loads; a healthy command prints nothing on standard error.

One tiny run (3 steps, d = 8) is trained once for the module, in a fresh process through the
console script; tests that damage it work on a copy. (The data-file cases — byte-order mark,
``NA`` ids, Parquet lists — are in ``tests/data/test_reader.py``.)
"""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tfsoft

from tests.cli_helpers import (CONFIG, ROOT, TINY, assert_damaged_best_is_refused_and_last_works, error_of,
                               run_tfsoft as _tfsoft, subprocess_env as _env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run directory, standard error of ``tfsoft train``)."""
    run = tmp_path_factory.mktemp("bad_inputs") / "run"
    done = _tfsoft("train", "--config", CONFIG, "--run-dir", run, *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done.stderr


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------- 1. damaged checkpoint
def test_truncated_best_checkpoint_is_named_and_last_is_suggested(run_copy, capsys):
    best, last = (run_copy / "checkpoints" / f"{name}.weights.h5" for name in ("best", "last"))
    truncate(best)
    assert_damaged_best_is_refused_and_last_works(run_copy, capsys, 1, f"checkpoint '{best}' is damaged and cannot be "
                                                  "read (", "truncated file")

    truncate(last)
    error = error_of(capsys, "evaluate", "--run-dir", run_copy)
    assert f"the last checkpoint '{last}' is damaged too" in error and "use --checkpoint" not in error, error


def test_checkpoint_that_does_not_fit_the_config_is_explained(run_copy, capsys):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("embedding_dim: 8", "embedding_dim: 16"))
    error = error_of(capsys, "evaluate", "--run-dir", run_copy, "--split", "test")
    assert f"checkpoint '{run_copy / 'checkpoints' / 'best.weights.h5'}' does not fit the model that config.yaml " \
           f"describes (ValueError: " in error and "has config.yaml or the data changed since training?" in error


# ------------------------------------------------------------ 4. checkpoint deleted after the run
def test_best_checkpoint_deleted_from_a_completed_run(run_copy, capsys):
    (run_copy / "checkpoints" / "best.weights.h5").unlink()
    error = error_of(capsys, "evaluate", "--run-dir", run_copy)
    assert "best.weights.h5' is missing from a completed run (metrics.json exists, so it was written and later " \
           "deleted or moved); --checkpoint last exists" in error, error
    assert "interrupted" not in error


# ---------------------------------------------------------- 5. refused before TensorFlow loads
_IN_PROCESS = "import sys; from tfsoft.cli import main; code = main(sys.argv[1:]); print(code, 'tensorflow' in sys.modules)"


def _in_process(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _IN_PROCESS, *map(str, argv)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=_env())


def test_a_folder_that_is_not_a_run_is_refused_before_tensorflow_loads(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    for argv in (["evaluate", "--run-dir", folder],
                 ["export", "--run-dir", folder, "--export-dir", tmp_path / "export"],
                 ["export", "--run-dir", tmp_path / "nowhere", "--export-dir", tmp_path / "export"],
                 ["recommend", "--run-dir", folder, "--user", "1"]):
        done = _in_process(*argv)
        assert done.stdout.split() == ["2", "False"], (argv, done.stdout, done.stderr[-2000:])
        assert done.stderr.startswith("tfsoft: error: ") and ("is not a tfsoft run directory" in done.stderr
                                                             or "does not exist" in done.stderr), done.stderr
    assert not (tmp_path / "export").exists()


def test_a_damaged_checkpoint_is_refused_before_tensorflow_loads(run_copy):
    truncate(run_copy / "checkpoints" / "best.weights.h5")
    for argv in (["evaluate", "--run-dir", run_copy],
                 ["export", "--run-dir", run_copy, "--export-dir", run_copy.parent / "export"]):
        done = _in_process(*argv)
        assert done.stdout.split() == ["2", "False"], (argv, done.stdout, done.stderr[-2000:])
        assert "is damaged and cannot be read" in done.stderr, done.stderr


# ------------------------------------------------------------------------ 7. quiet when healthy
def test_train_and_evaluate_print_nothing_but_their_output(trained):
    run, train_stderr = trained
    lines = train_stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1  loss "), train_stderr  # no cuInit, no slow callback
    done = _tfsoft("evaluate", "--run-dir", run, "--split", "test")
    assert done.returncode == 0 and "test" in json.loads(done.stdout), done.stderr[-2000:]
    if tfsoft._has_nvidia_gpu():  # a GPU machine keeps TensorFlow's C++ error lines (tfsoft._cpp_log_level)
        assert "cuInit" not in done.stderr, done.stderr
    else:
        assert done.stderr == "", done.stderr


def test_progress_line_does_no_work_per_step_without_its_bar():
    """Keras calls batch hooks only for callbacks that implement them and, unless every such callback
    takes tensors, syncs each step's logs to Python numbers first: the progress line without a
    bar (output not a terminal) must implement none, so Keras has nothing to call or time."""
    from tfsoft.backend import keras
    from tfsoft.callbacks import ProgressLine

    quiet = ProgressLine(3, monitor="val_ndcg@10", stream=io.StringIO())
    assert not quiet.bar and not quiet._implements_train_batch_hooks()
    hooks = keras.callbacks.CallbackList([quiet], add_history=True, add_progbar=False)
    assert not hooks._should_call_train_batch_hooks

    class Loss:  # a tensor that counts how often it is read
        reads = 0

        def __float__(self):
            Loss.reads += 1
            return 1.0

    shown = ProgressLine(3, monitor="val_ndcg@10", stream=io.StringIO(), bar=True)
    assert shown._implements_train_batch_hooks() and shown._supports_tf_logs  # batch logs stay tensors
    shown.set_params({"steps": 50, "epochs": 3})
    shown.on_epoch_begin(0)
    for step in range(50):
        shown.on_train_batch_end(step, {"loss": Loss()})
    shown.on_train_end()
    assert 1 <= Loss.reads <= 2  # at most every LOSS_SECONDS, not every step
