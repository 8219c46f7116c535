"""Test configuration: Keras 2 before TensorFlow is imported; real data from ../shared/data.

Every test starts from the same process-wide random and determinism state, whatever ran
before it (:func:`_isolate_global_state`); tests draw their data from the ``rng`` fixture,
never from a generator shared at module level.

TensorFlow is not imported here: tests that need no TensorFlow (config, files) stay fast, and
``tfsoft.backend`` chooses the C++ log level before the first import (see its docstring).
"""

import os
import random
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A fresh NumPy generator per test (seed 0): data does not depend on which tests ran before."""
    return np.random.default_rng(0)


def _tf_state():
    """(op determinism enabled, TensorFlow's global seed), or None if TensorFlow is not loaded."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    return tf_config.is_op_determinism_enabled(), context.global_seed()


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Undo what a test did to process-wide state that changes other tests' results.

    * op determinism (``tfsoft train`` and ``train(deterministic=True)`` turn it on for the
      whole process; the public API cannot turn it off): back to its state before the test;
    * TensorFlow's global seed (``tf.random.set_seed``, ``keras.utils.set_random_seed``):
      back to its value before the test (None unless a test-external fixture set one), which
      also resets the op-seed counters of stateful random ops;
    * Python's ``random`` and NumPy's global generator (``keras.utils.set_random_seed`` seeds
      both): their states are restored.

    TensorFlow is looked at only if the test (or an earlier one) imported it.
    """
    before = _tf_state()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    if "tensorflow" not in sys.modules:
        return
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    determinism, seed = before if before is not None else (False, None)
    if tf_config.is_op_determinism_enabled() != determinism:
        if determinism:
            tf_config.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
    context.set_global_seed(seed)


@pytest.fixture(scope="session")
def lastfm():
    """The bundled Last.FM file as a canonical interactions table (skips nothing: the data must exist)."""
    from tfsoft.data import load_dataset

    return load_dataset("lastfm_small")


def train_small_run(root, *overrides):
    """A briefly trained run directory of the default config (1 epoch, 30 steps, d=16)."""
    from pathlib import Path

    from tensorflow.python.framework import config as tf_config

    from tfsoft.config import load_config
    from tfsoft.train_run import train_run

    enabled = tf_config.is_op_determinism_enabled()
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lastfm_in_batch.yaml",
                         ["train.epochs=1", "train.steps_per_epoch=30", "model.embedding_dim=16", *overrides])
    train_run(config, root, stream=open(os.devnull, "w"))
    if not enabled:  # tfsoft train turns on deterministic ops for the process; leave it as found
        tf_config.disable_op_determinism()
    return root


@pytest.fixture(scope="session")
def history_run(tmp_path_factory):
    """A trained run whose query tower reads the item history (serving input ``history``)."""
    return train_small_run(tmp_path_factory.mktemp("runs") / "history")


@pytest.fixture(scope="session")
def user_run(tmp_path_factory):
    """A trained run with an ID query tower (serving input ``user_id``; precomputed user vectors)."""
    return train_small_run(tmp_path_factory.mktemp("runs") / "user", "model.query_tower=id")


#: a 3-step, d = 8 training: the teacher/base runs of the soft-target tests and their students
TINY_TRAINING = ("train.epochs=1", "train.steps_per_epoch=3", "model.embedding_dim=8")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run of the default config trained for 3 steps at d = 8 (:data:`TINY_TRAINING`): the
    teacher of ``tests/test_teacher.py`` and the DeSoRec base of ``tests/test_desorec_target.py``.
    Tests that move it away put it back."""
    return train_small_run(tmp_path_factory.mktemp("runs") / "tiny", *TINY_TRAINING)
