"""Tiny exports shared by the batch tests (built once per session: a SavedModel save takes ~1 s)."""

import pytest

from tests.batch.exports import make_export


@pytest.fixture(scope="session")
def history_export(tmp_path_factory):
    """int64 ids, history query tower (mean of item vectors), brute force, k = 10."""
    return make_export(tmp_path_factory.mktemp("batch") / "history_model", dtype="int64", inputs=("history",))


@pytest.fixture(scope="session")
def string_export(tmp_path_factory):
    """string ids, precomputed user vectors (user_id input), brute force, k = 10."""
    return make_export(tmp_path_factory.mktemp("batch") / "string_model", dtype="string", inputs=("user_id",), seed=1)
