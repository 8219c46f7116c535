"""Repeatable runs: the same config and seed give the same weights and the same metrics.

Sources of run-to-run variation in a tfsoft run, and what removes each one:

* **Random draws** — weight initialisers, dropout (GRU/SASRec towers), negative samplers,
  Python/NumPy helpers. :func:`keras.utils.set_random_seed` seeds Python, NumPy and
  TensorFlow's global seed (every op seed derives from it); the samplers and the
  ``tf.data`` shuffle also take ``train.seed`` explicitly.
* **Input order** — ``tf.data`` shuffles with a fixed op seed and runs with
  ``options.deterministic = True`` (:func:`tfsoft.data.pipeline.make_dataset`).
* **Kernels that accumulate in a nondeterministic order** — mostly GPU kernels that add with
  atomics: the gradient of an embedding lookup (``tf.gather`` -> ``UnsortedSegmentSum``),
  the optimizer's sparse ``ResourceScatterAdd`` on embedding tables, ``tf.math.bincount``
  and segment sums, softmax cross-entropy backprop and the cuDNN GRU kernels; on CPU,
  ``tf.data`` parallel stages. :func:`tf.config.experimental.enable_op_determinism` selects
  deterministic kernels (or raises ``UnimplementedError`` where an op has none) and makes
  every ``tf.data`` stage deterministic.

Determinism holds on the same hardware and software; it is not promised across TensorFlow
versions, CPU/GPU, or across replica counts of a distribution strategy.
"""

from __future__ import annotations

from tfsoft.backend import keras, tf


def make_deterministic(seed: int, *, ops: bool = True) -> None:
    """Seed every random number generator and (``ops=True``) turn on deterministic TensorFlow ops.

    Call it before TensorFlow runs its first op: kernels created earlier keep the
    implementation they were built with. Enabling op determinism is process-wide and cannot
    be undone through the public API (tests restore it through ``tensorflow.python``).

    Args:
        seed: seed of Python's ``random``, NumPy's global generator and TensorFlow's global seed.
        ops: also call ``tf.config.experimental.enable_op_determinism()``.
    """
    if ops:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
