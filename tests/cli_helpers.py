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
