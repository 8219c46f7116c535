"""Running the installed ``tfsoft`` console script in a subprocess, as a user would (shared by
the bad-input and manifest tests)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lastfm_in_batch.yaml"
#: a run in seconds: one epoch of three steps, d = 8
TINY = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=3", "--set", "model.embedding_dim=8"]


def subprocess_env() -> dict:
    """The test environment minus what tfsoft sets for itself (the pytest process imported it)."""
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}


def run_tfsoft(*argv, timeout=300) -> subprocess.CompletedProcess:
    """``tfsoft ARGV...`` from the repository root, output captured."""
    script = shutil.which("tfsoft", path=str(Path(sys.executable).parent))
    assert script, f"the tfsoft console script is not installed next to {sys.executable}"
    return subprocess.run([script, *map(str, argv)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=subprocess_env())


def error_of(capsys, *argv) -> str:
    """``tfsoft ARGV`` in-process: exit status 2 and a one-line ``tfsoft: error:`` (no traceback)."""
    from tfsoft.cli import main

    capsys.readouterr()
    assert main([*map(str, argv)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tfsoft: error: ") and "Traceback" not in error, error
    return error


def assert_damaged_best_is_refused_and_last_works(run, capsys, user: int, *expected: str) -> None:
    """``evaluate``, ``export`` and ``recommend`` on a run whose ``best`` checkpoint is damaged:
    each refuses with every ``expected`` substring and the ``--checkpoint last`` suggestion,
    nothing is exported, and following the suggestion works."""
    import json

    from tfsoft.cli import main

    last = run / "checkpoints" / "last.weights.h5"
    for argv in (["evaluate", "--run-dir", run],
                 ["export", "--run-dir", run, "--export-dir", run.parent / "export"],
                 ["recommend", "--run-dir", run, "--user", str(user)]):
        error = error_of(capsys, *argv)
        for text in expected:
            assert text in error, error
        assert f"the last checkpoint '{last}' is intact: use --checkpoint last" in error, error
    assert not (run.parent / "export").exists()
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run), "--checkpoint", "last", "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["num_queries"] > 0  # the suggestion works
