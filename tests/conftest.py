"""Test configuration: Keras 2 before TensorFlow is imported; real data from ../shared/data."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


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
    from tfsoft.runs import train_run

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
