"""The one place where tfsoft imports TensorFlow and Keras.

TensorFlow Recommenders needs Keras 2 (``tf_keras``). ``TF_USE_LEGACY_KERAS=1`` must be set
before TensorFlow is first imported so that ``tf.keras`` *is* ``tf_keras``; every other
module does ``from tfsoft.backend import tf, keras``. A later port to Keras 3 starts here,
and also touches what relies on tf_keras specifics: ``keras.optimizers.legacy.Adam``
(``tfsoft.training.make_optimizer``), :class:`tfsoft.optimizers.LazyAdam` (tf_keras'
optimizer internals) and the optimizer lists of :mod:`tfsoft.gradients`.
"""

from __future__ import annotations

import os

# tfsoft/__init__.py, which Python runs before this module, already set both defaults:
# TF_USE_LEGACY_KERAS=1 and TF_CPP_MIN_LOG_LEVEL (2, or 3 on a machine without a GPU, where
# TensorFlow's CUDA build logs "failed call to cuInit" at ERROR severity on every run; see
# tfsoft._cpp_log_level). Repeated here where TensorFlow is imported, for the reader.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    raise ImportError(
        "tfsoft needs Keras 2: TF_USE_LEGACY_KERAS is set to "
        f"{os.environ.get('TF_USE_LEGACY_KERAS')!r}; unset it or set it to '1' before importing tfsoft"
    )

__all__ = ["tf", "keras"]
