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
