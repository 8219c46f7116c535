"""tfsoft: a production trainer for two-tower retrieval recommenders in TensorFlow/Keras.

Importing tfsoft (any of its modules) sets, before TensorFlow is first imported:

* ``TF_USE_LEGACY_KERAS=1``, so that ``tf.keras`` is Keras 2 (tf_keras), which TensorFlow
  Recommenders requires;
* ``TF_CPP_MIN_LOG_LEVEL``, the severity below which TensorFlow's C++ logging is dropped:
  ``2`` (errors only), or ``3`` on a machine without an NVIDIA GPU (:func:`_cpp_log_level`).

Both are defaults: a value already in the environment wins.
"""

from __future__ import annotations

import glob
import os
import sys

__version__ = "0.1.0"


def _has_nvidia_gpu() -> bool:
    """Whether this process may see an NVIDIA GPU, judged without importing TensorFlow.

    False when ``CUDA_VISIBLE_DEVICES`` hides every device ("" or a list starting with -1), or
    on Linux when there is no NVIDIA driver device (``/dev/nvidiactl``, ``/dev/nvidia<N>``,
    ``/proc/driver/nvidia``) nor WSL2's GPU device (``/dev/dxg``). Anywhere else True: when
    unsure, assume a GPU, which only keeps TensorFlow's error log lines.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or visible.split(",")[0].strip() == "-1"):
        return False
    if not sys.platform.startswith("linux"):
        return True
    return bool(glob.glob("/dev/nvidia[0-9]*")) or any(
        os.path.exists(path) for path in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg"))


def _cpp_log_level() -> str:
    """Default ``TF_CPP_MIN_LOG_LEVEL``: ``"2"``, or ``"3"`` without a GPU.

    ``2`` drops INFO and WARNING lines (oneDNN notices, "Could not find cuda drivers"). The
    CUDA build of TensorFlow also initialises the CUDA platform when it lists devices, and on
    a machine without a GPU (or with every GPU hidden) it logs, at ERROR severity,
    ``E ... cuda_platform.cc:51] failed call to cuInit: ...`` on every run. Only level ``3``
    drops it: TensorFlow's C++ logging has no per-file severity, and hiding devices with
    ``CUDA_VISIBLE_DEVICES`` does not stop the cuInit call. So level 3 is used only where no
    GPU is present, where that line is noise; errors that matter still reach Python as
    exceptions. A GPU machine keeps level 2 and sees every C++ error, and its GPUs are not
    touched (nothing here changes which devices TensorFlow sees).
    """
    return "2" if _has_nvidia_gpu() else "3"


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _cpp_log_level())
