"""The signature call on a batch: inputs built from query rows, outputs flattened, against NumPy."""

import numpy as np
import pytest

from tfsoft.batch.rows import QueryRows
from tfsoft.batch.runner import SignatureRunner, flatten_top_k, query_features
from tfsoft.errors import ExportError


def test_flatten_top_k_keeps_the_first_k_and_drops_empty_slots():
    low = -3.0e38
    ids = np.array([[5, 6, 7], [8, 0, 0]])
    scores = np.array([[0.9, 0.5, 0.1], [0.7, low, low]], np.float32)
    lists = flatten_top_k(ids, scores, 2, low)
    assert lists.row(0) == ([5, 6], pytest.approx([0.9, 0.5])) and lists.row(1) == ([8], pytest.approx([0.7]))
    assert lists.offsets.tolist() == [0, 2, 3]


def test_query_features_fill_each_signature_input():
    rows = QueryRows("f", np.array([1, 2]), np.array([10, 20]), np.array([3, 4, 5]), np.array([0, 1, 3]))
    features = query_features(rows, ("exclude_item_ids", "history", "user_id"), pad=-1)
    assert features["user_id"].tolist() == [10, 20]
    assert features["history"].tolist() == features["exclude_item_ids"].tolist() == [[3, -1], [4, 5]]
    with pytest.raises(ExportError, match="cannot fill"):
        query_features(rows, ("candidate_ids",), pad=-1)


def test_runner_answers_as_numpy_and_refuses_other_signatures(history_export):
    runner = SignatureRunner(history_export.base / "1", "top_k_excluding")
    assert runner.inputs == ("exclude_item_ids", "history")
    histories = [history_export.items[:3], [history_export.items[9], 99_999]]
    rows = QueryRows("f", np.array([1, 2]), np.array([1, 2]), np.array([i for h in histories for i in h]),
                     np.array([0, 3, 5]))
    lists = runner.top_k(query_features(rows, runner.inputs, -1), 4)
    for i, history in enumerate(histories):
        items, scores = history_export.reference(history=history, k=4, exclude=history)
        assert lists.row(i)[0] == items
        np.testing.assert_allclose(lists.row(i)[1], scores, atol=1e-5)
    embedding = runner.embed(query_features(rows, ("history",), -1))
    np.testing.assert_allclose(embedding[0], history_export.item_query_table[[1, 2, 3]].mean(axis=0), atol=1e-6)
    with pytest.raises(ExportError, match="returns the top 10"):
        runner.top_k(query_features(rows, runner.inputs, -1), 11)
    with pytest.raises(ExportError, match="needs"):
        SignatureRunner(history_export.base / "1", "query_embedding")
    with pytest.raises(ExportError, match="no signature 'nope'"):
        SignatureRunner(history_export.base / "1", "nope")
