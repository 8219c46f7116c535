"""Importing tfsoft sets TensorFlow's environment before TensorFlow loads: Keras 2, and a C++
log level that keeps the "failed call to cuInit" error line off machines without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tfsoft

ROOT = Path(__file__).resolve().parents[1]


def _python(code, **env):
    """Run ``code`` in a fresh interpreter with the test environment minus the variables tfsoft sets."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS", "CUDA_VISIBLE_DEVICES")}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_a_tensorflow_op_logs_no_cuinit_error():
    result = _python("import os; import tfsoft.backend as b; x = b.tf.constant(1) + 1; "
                     "print(int(x.numpy()), os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    assert result.returncode == 0, result.stderr
    assert "cuInit" not in result.stderr, result.stderr
    value, level = result.stdout.split()
    assert value == "2"
    assert level == ("2" if tfsoft._has_nvidia_gpu() else "3")


def test_an_explicit_log_level_wins():
    result = _python("import os, tfsoft; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])", TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0 and result.stdout.strip() == "0", result.stderr


@pytest.mark.parametrize("visible", ["", " ", "-1", "-1,0"])
def test_hidden_gpus_count_as_none(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert not tfsoft._has_nvidia_gpu()
    assert tfsoft._cpp_log_level() == "3"


def test_an_nvidia_device_node_keeps_error_logs(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(tfsoft.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    assert tfsoft._has_nvidia_gpu() and tfsoft._cpp_log_level() == "2"
    monkeypatch.setattr(tfsoft.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(tfsoft.os.path, "exists", lambda path: path == "/dev/dxg")  # WSL2
    assert tfsoft._has_nvidia_gpu()
    monkeypatch.setattr(tfsoft.os.path, "exists", lambda path: False)
    assert not tfsoft._has_nvidia_gpu() and tfsoft._cpp_log_level() == "3"
