"""tfsoft: a production trainer for two-tower retrieval recommenders in TensorFlow/Keras.

Importing tfsoft sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported so that
``tf.keras`` is Keras 2 (tf_keras), which TensorFlow Recommenders requires.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
