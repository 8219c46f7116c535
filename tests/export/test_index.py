"""Retrieval indexes: brute force equals a NumPy exact search; ScaNN reaches its recall floor."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ExportError
from tfsoft.export.index import BruteForceIndex, ScannIndex, ScannParams, build_index, index_recall
from tfsoft.topk import LOWEST_SCORE


def clustered(num_items=3000, dim=16, seed=0):
    """Normalised embeddings in 30 clusters (real embeddings are clustered) and nearby queries."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, dim))
    embeddings = centers[rng.integers(0, 30, num_items)] + 0.35 * rng.normal(size=(num_items, dim))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    queries = embeddings[rng.integers(1, num_items, 200)] + 0.1 * rng.normal(size=(200, dim))
    return embeddings.astype(np.float32), queries.astype(np.float32)


def numpy_top_k(queries, embeddings, k):
    """Reference: score every item but the OOV row 0, sort descending."""
    scores = queries @ embeddings.T
    scores[:, 0] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], np.sort(scores, axis=1)[:, ::-1][:, :k]


def test_brute_force_matches_numpy_and_never_returns_the_oov_row():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(50, 8)).astype(np.float32)
    embeddings[0] = 100.0  # the OOV row would win every query if it were searched
    queries = rng.normal(size=(7, 8)).astype(np.float32)
    indices, scores = BruteForceIndex(embeddings).search(tf.constant(queries), tf.constant(10))
    want_indices, want_scores = numpy_top_k(queries, embeddings, 10)
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5)
    assert BruteForceIndex(embeddings).search(tf.constant(queries), 500)[0].shape == (7, 49)  # capped at catalog


def test_both_indexes_exclude_items_and_mark_empty_slots():
    """Brute force masks its score matrix, ScaNN over-fetches k + E and drops; on a catalog searched
    exhaustively (one leaf, every candidate re-scored) both equal NumPy."""
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(40, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    exclude = np.stack([rng.permutation(np.arange(-3, 45))[:30] for _ in range(5)])  # padding, unknown ids too
    scores = queries @ embeddings.T
    scores[:, 0] = -np.inf
    for row, banned in enumerate(exclude):
        scores[row, banned[(banned > 0) & (banned < 40)]] = -np.inf
    want = np.argsort(-scores, axis=1, kind="stable")[:, :15]
    allowed = np.isfinite(np.take_along_axis(scores, want, axis=1))
    want = np.where(allowed, want, 0)
    exhaustive = ScannParams(num_leaves=1, reorder_num_neighbors=39)
    for index in (BruteForceIndex(embeddings), ScannIndex(embeddings, k=15, params=exhaustive)):
        indices, found = index.search(tf.constant(queries), 15, exclude=tf.constant(exclude, tf.int64))
        np.testing.assert_array_equal(indices.numpy(), want, err_msg=index.kind)
        np.testing.assert_array_equal(found.numpy() == LOWEST_SCORE, ~allowed, err_msg=index.kind)
        np.testing.assert_allclose(found.numpy()[allowed], np.take_along_axis(scores, want, axis=1)[allowed],
                                   rtol=1e-4, atol=1e-4, err_msg=index.kind)


def test_scann_tunes_leaves_to_reach_the_recall_floor_and_brute_force_is_exact():
    embeddings, queries = clustered()
    index = ScannIndex(embeddings, k=10, params=ScannParams(num_leaves_to_search=1))
    low = index_recall(index, queries, embeddings, 10)
    ladder = index.tune(queries, embeddings, 10, min_recall=0.97)
    assert ladder[0]["leaves_to_search"] == 1 and ladder[0]["recall"] == pytest.approx(low)
    assert_fastest_passing(ladder, 0.97, index)
    assert index_recall(index, queries, embeddings, 10) >= 0.97
    assert index_recall(BruteForceIndex(embeddings), queries, embeddings, 10) == 1.0
    found = index.search(tf.constant(queries[:3]), 10)[0].numpy()
    assert found.min() >= 1 and found.shape == (3, 10)


def assert_fastest_passing(ladder, floor, index, tolerance=0.05):
    """The chosen setting (last) is the index's setting and passes; at each reorder depth, every
    measured leaf count within the bisection's tolerance below that depth's fewest passing count
    fails; among the passing pairs that were timed, the chosen one is the fastest."""
    pairs = [(step["leaves_to_search"], step["reorder_num_neighbors"]) for step in ladder]
    assert len(set(pairs)) == len(pairs), pairs
    chosen = ladder[-1]
    assert chosen["recall"] >= floor
    assert (index.leaves_to_search, index.reorder_num_neighbors) == pairs[-1]
    for reorder in {depth for _, depth in pairs}:
        steps = [step for step in ladder if step["reorder_num_neighbors"] == reorder]
        passing = [step["leaves_to_search"] for step in steps if step["recall"] >= floor]
        if not passing:
            continue
        fewest = min(passing)
        below = [step for step in steps if step["leaves_to_search"] < fewest]
        assert all(step["recall"] < floor for step in below), ladder
        assert fewest == 1 or any(fewest - step["leaves_to_search"] <= max(1, int(tolerance * fewest))
                                  for step in below), ladder
    timed = [step for step in ladder if "search_seconds" in step]
    if timed:
        assert all(step["recall"] >= floor for step in timed)
        assert chosen["search_seconds"] == min(step["search_seconds"] for step in timed)


def test_scann_tuning_searches_fewer_leaves_when_the_default_already_passes():
    embeddings, queries = clustered()
    index = ScannIndex(embeddings, k=10, params=ScannParams(reorder_num_neighbors=40))  # a quarter of the leaves
    start = index.leaves_to_search
    ladder = index.tune(queries, embeddings, 10, min_recall=0.9)
    assert index.reorder_choices == (40,) and {step["reorder_num_neighbors"] for step in ladder} == {40}
    assert ladder[0]["leaves_to_search"] == start and ladder[0]["recall"] >= 0.9
    assert_fastest_passing(ladder, 0.9, index)
    assert index.leaves_to_search < start
    # recall grows with the leaves searched: the same index tuned from one leaf lands on the same answer
    chosen, index.leaves_to_search = index.leaves_to_search, 1
    index.tune(queries, embeddings, 10, min_recall=0.9)
    assert index.leaves_to_search == pytest.approx(chosen, abs=max(1, 0.05 * start))


def test_scann_tuning_times_each_reorder_depth_at_its_fewest_leaves():
    embeddings, queries = clustered()
    index = ScannIndex(embeddings, k=10)
    assert index.reorder_choices == (10, 20, 100)
    ladder = index.tune(queries, embeddings, 10, min_recall=0.9)
    assert {step["reorder_num_neighbors"] for step in ladder} == {10, 20, 100}
    assert_fastest_passing(ladder, 0.9, index)
    assert index_recall(index, queries, embeddings, 10) == pytest.approx(ladder[-1]["recall"])
    capped = [depth for depth in (10, 20)
              if all(step["recall"] < 0.9 for step in ladder if step["reorder_num_neighbors"] == depth)]
    assert capped, ladder  # re-scoring only k (or 2k) candidates caps recall below the floor here
    for depth in capped:  # such a depth is given up after one exhaustive pass, not a doubling ladder
        tried = [step["leaves_to_search"] for step in ladder if step["reorder_num_neighbors"] == depth]
        assert len(tried) == 2 and tried[-1] == index.params.num_leaves, ladder


def test_scann_tuning_keeps_every_leaf_when_the_floor_is_out_of_reach():
    embeddings, queries = clustered()
    index = ScannIndex(embeddings, k=10, params=ScannParams(num_leaves_to_search=2, dimensions_per_block=8,
                                                           reorder_num_neighbors=30))
    ladder = index.tune(queries, embeddings, 10, min_recall=1.01)
    assert index.leaves_to_search == index.params.num_leaves == ladder[-1]["leaves_to_search"]
    assert [step["leaves_to_search"] for step in ladder] == [2, 4, 8, 16, 32, 64, 128, index.params.num_leaves][
        :len(ladder) - 1] + [index.params.num_leaves]


def test_scann_params_are_sized_from_the_catalog():
    params = ScannParams().resolve(num_candidates=10_000, k=100)
    assert params.num_leaves == 100 and params.num_leaves_to_search == 25
    assert params.reorder_num_neighbors == 400 and params.training_sample_size == 10_000
    assert ScannParams().resolve(num_candidates=50, k=10).reorder_num_neighbors == 50
    with pytest.raises(ExportError, match="num_leaves"):
        ScannParams(num_leaves=100).resolve(num_candidates=20, k=5)


def test_bad_embeddings_and_index_kind_are_refused():
    with pytest.raises(ExportError, match="NaN/Inf .* item index 3"):
        embeddings = np.ones((5, 4), np.float32)
        embeddings[3, 1] = np.nan
        BruteForceIndex(embeddings)
    with pytest.raises(ExportError, match=r"\[V >= 2, d\]"):
        BruteForceIndex(np.ones((1, 4), np.float32))
    with pytest.raises(ExportError, match="brute_force, scann; got 'faiss'"):
        build_index("faiss", np.ones((5, 4), np.float32), 3)
