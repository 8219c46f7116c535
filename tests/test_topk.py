"""tfsoft.topk against NumPy references: masking, exact top-k and the exclusion filter of an
approximate index, with ties, padding ids, empty exclusions, small catalogs and tf.function."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.topk import LOWEST_SCORE, drop_excluded, exact_top_k, mask_excluded


# ------------------------------------------------------------------ NumPy references
def reference_mask(scores, exclude):
    """Column 0 and every excluded index in 1 .. V-1 of each row set to LOWEST_SCORE."""
    out = np.array(scores, np.float32, copy=True)
    out[:, 0] = LOWEST_SCORE
    for row, items in enumerate(np.asarray(exclude).reshape(len(out), -1)):
        for item in items:
            if 0 < item < out.shape[1]:
                out[row, item] = LOWEST_SCORE
    return out


def reference_top_k(queries, candidates, k, exclude=None):
    """Scores in float64 (exact for the integer-valued inputs used here), stable sort: ties keep
    the lower index first; masked slots become (0, LOWEST_SCORE)."""
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    scores = reference_mask(scores.astype(np.float32), np.zeros((len(scores), 0), np.int64)
                            if exclude is None else exclude)
    k = min(k, scores.shape[1] - 1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    return np.where(values == LOWEST_SCORE, 0, order), values


def reference_drop(indices, scores, exclude, k):
    """Keep results with index > 0 not in the row's exclusions; best ``k`` by score, ties in their
    original order; pad with (0, LOWEST_SCORE)."""
    out_i, out_s = [], []
    k = min(k, np.shape(indices)[1])
    for row_i, row_s, row_x in zip(indices, scores, exclude):
        banned = set(np.asarray(row_x).tolist())
        kept = [(s, i) for i, s in zip(row_i.tolist(), row_s.tolist()) if i > 0 and i not in banned]
        kept.sort(key=lambda pair: -pair[0])  # stable
        kept = kept[:k] + [(LOWEST_SCORE, 0)] * (k - len(kept[:k]))
        out_i.append([i for _, i in kept])
        out_s.append([s for s, _ in kept])
    return np.array(out_i, np.int64).reshape(len(out_i), k), np.array(out_s, np.float32).reshape(len(out_s), k)


def padded_exclusions(rng, batch, width, num_items):
    """Real excluded ids mixed with every padding kind: 0, -1, V, far out of range, duplicates."""
    exclude = rng.integers(1, num_items, size=(batch, width))
    pads = np.array([0, -1, num_items, num_items + 1000, -(2 ** 40)])
    mask = rng.random((batch, width)) < 0.4
    exclude[mask] = rng.choice(pads, size=mask.sum())
    if width > 1:
        exclude[:, -1] = exclude[:, 0]  # a duplicate
    return exclude.astype(np.int64)


def integer_data(rng, batch, num_items, dim=6):
    """Small integers: exact float32 scores, many ties."""
    return (rng.integers(-2, 3, size=(batch, dim)).astype(np.float32),
            rng.integers(-2, 3, size=(num_items, dim)).astype(np.float32))


# ------------------------------------------------------------------ mask_excluded
@pytest.mark.parametrize("width", [0, 1, 7])
def test_mask_excluded_matches_numpy_and_ignores_padding(width):
    rng = np.random.default_rng(width)
    scores = rng.normal(size=(5, 12)).astype(np.float32)
    exclude = padded_exclusions(rng, 5, width, 12)
    got = mask_excluded(tf.constant(scores), tf.constant(exclude)).numpy()
    np.testing.assert_array_equal(got, reference_mask(scores, exclude))
    got32 = mask_excluded(tf.constant(scores), tf.constant(exclude.clip(-5, 50).astype(np.int32))).numpy()
    np.testing.assert_array_equal(got32, reference_mask(scores, exclude.clip(-5, 50)))


def test_mask_excluded_refuses_mismatched_batches_and_ranks():
    with pytest.raises(ValueError, match=r"same batch size; got shapes \(3, 5\) and \(2, 1\)"):
        mask_excluded(tf.zeros([3, 5]), tf.zeros([2, 1], tf.int64))
    with pytest.raises(ValueError, match=r"exclude must have rank 2; got shape \(3,\)"):
        mask_excluded(tf.zeros([3, 5]), tf.zeros([3], tf.int64))
    masked = tf.function(mask_excluded,
                         input_signature=[tf.TensorSpec([None, 5]), tf.TensorSpec([None, None], tf.int64)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        masked(tf.zeros([3, 5]), tf.zeros([2, 1], tf.int64))


# ------------------------------------------------------------------ exact_top_k
@pytest.mark.parametrize("width", [0, 3, 40])
def test_exact_top_k_matches_numpy_with_ties_and_padded_exclusions(width):
    rng = np.random.default_rng(10 + width)
    queries, candidates = integer_data(rng, 9, 60)
    candidates[0] = 50.0  # the OOV row would win every query if it were searched
    exclude = padded_exclusions(rng, 9, width, 60)
    want_i, want_s = reference_top_k(queries, candidates, 15, exclude)
    got_i, got_s = exact_top_k(tf.constant(queries), tf.constant(candidates), 15, tf.constant(exclude))
    np.testing.assert_array_equal(got_i.numpy(), want_i)
    np.testing.assert_array_equal(got_s.numpy(), want_s)
    assert (got_i.numpy() >= 1).all()  # a catalog of 59 items has 15 allowed ones left
    for row, banned in zip(got_i.numpy(), exclude):
        assert not set(row.tolist()) & set(banned.tolist())


def test_exact_top_k_on_float_scores_and_without_exclusions():
    rng = np.random.default_rng(3)
    queries, candidates = rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(500, 16)).astype(np.float32)
    got_i, got_s = exact_top_k(tf.constant(queries), tf.constant(candidates), 20)
    scores = queries.astype(np.float64) @ candidates.astype(np.float64).T
    scores[:, 0] = -np.inf
    np.testing.assert_allclose(got_s.numpy(), -np.sort(-scores, axis=1)[:, :20], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(scores, got_i.numpy(), axis=1), got_s.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_i.numpy(), np.argsort(-scores, axis=1)[:, :20])  # no near-ties here
    none_i, _ = exact_top_k(tf.constant(queries), tf.constant(candidates), 20, tf.zeros([6, 0], tf.int64))
    np.testing.assert_array_equal(none_i.numpy(), got_i.numpy())  # E = 0 is the same as no exclusion


def test_exact_top_k_marks_empty_slots_when_the_catalog_is_smaller_than_k_plus_exclusions():
    rng = np.random.default_rng(4)
    queries, candidates = integer_data(rng, 4, 8)  # 7 real items
    exclude = np.array([[1, 2, 3, 4], [5, 6, 0, -1], [7, 7, 7, 99], [1, 2, 3, 4]], np.int64)
    got_i, got_s = exact_top_k(tf.constant(queries), tf.constant(candidates), 5, tf.constant(exclude))
    want_i, want_s = reference_top_k(queries, candidates, 5, exclude)
    np.testing.assert_array_equal(got_i.numpy(), want_i)
    np.testing.assert_array_equal(got_s.numpy(), want_s)
    assert (got_i.numpy()[0, 3:] == 0).all() and (got_s.numpy()[0, 3:] == LOWEST_SCORE).all()  # 3 items left
    assert (got_i.numpy()[0, :3] > 0).all() and (got_s.numpy()[1, :5] > LOWEST_SCORE).all()
    assert exact_top_k(tf.constant(queries), tf.constant(candidates), 50)[0].shape == (4, 7)  # k' = V - 1


def test_exact_top_k_inside_tf_function_with_unknown_batch_and_exclusion_width():
    rng = np.random.default_rng(5)
    queries, candidates = integer_data(rng, 7, 30)
    search = tf.function(lambda q, e, k: exact_top_k(q, tf.constant(candidates), k, e),
                         input_signature=[tf.TensorSpec([None, 6]), tf.TensorSpec([None, None], tf.int64),
                                          tf.TensorSpec([], tf.int32)])
    for width in (0, 4, 35):
        exclude = padded_exclusions(rng, 7, width, 30)
        got_i, got_s = search(tf.constant(queries), tf.constant(exclude), tf.constant(6))
        want_i, want_s = reference_top_k(queries, candidates, 6, exclude)
        np.testing.assert_array_equal(got_i.numpy(), want_i)
        np.testing.assert_array_equal(got_s.numpy(), want_s)
    empty_i, _ = search(tf.zeros([0, 6]), tf.zeros([0, 3], tf.int64), tf.constant(6))  # an empty batch
    assert empty_i.shape == (0, 6)


# ------------------------------------------------------------------ drop_excluded
def approximate_results(rng, batch, n, num_items):
    """What an approximate index returns: distinct indices, scores sorted descending with ties,
    some invalid (0 or -1) slots."""
    indices = np.stack([rng.permutation(np.arange(1, num_items))[:n] for _ in range(batch)])
    scores = -np.sort(-rng.integers(0, 6, size=(batch, n)).astype(np.float32), axis=1)  # many ties
    invalid = rng.random((batch, n)) < 0.1
    indices[invalid] = rng.choice([0, -1], size=invalid.sum())
    return indices.astype(np.int32), scores


@pytest.mark.parametrize("width", [0, 5, 300])
def test_drop_excluded_matches_numpy(width):
    rng = np.random.default_rng(20 + width)
    indices, scores = approximate_results(rng, 8, 25, 400)
    exclude = padded_exclusions(rng, 8, width, 400)
    if width:
        exclude[0, :5] = indices[0, :5]  # the top 5 of row 0 excluded
    for k in (1, 10, 25, 40):
        got_i, got_s = drop_excluded(tf.constant(indices), tf.constant(scores), tf.constant(exclude), k)
        want_i, want_s = reference_drop(indices, scores, exclude, k)
        np.testing.assert_array_equal(got_i.numpy(), want_i)
        np.testing.assert_array_equal(got_s.numpy(), want_s)
        assert got_i.dtype == tf.int64


def test_drop_excluded_pads_when_too_few_remain():
    indices = np.array([[3, 9, 4], [0, 2, -1]], np.int64)
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]], np.float32)
    got_i, got_s = drop_excluded(tf.constant(indices), tf.constant(scores), tf.constant([[3, 4], [-1, 0]]), 3)
    np.testing.assert_array_equal(got_i.numpy(), [[9, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(got_s.numpy(), np.array([[0.5, LOWEST_SCORE, LOWEST_SCORE],
                                                           [0.7, LOWEST_SCORE, LOWEST_SCORE]], np.float32))


def test_drop_excluded_with_thousands_of_exclusions_inside_tf_function():
    rng = np.random.default_rng(6)
    num_items, width = 20_000, 5_000
    indices, scores = approximate_results(rng, 4, 120, num_items)
    exclude = rng.integers(1, num_items, size=(4, width))
    exclude[:, :60] = indices[:, ::2]  # half of every row's results are excluded
    drop = tf.function(lambda i, s, e: drop_excluded(i, s, e, 50),
                       input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None]),
                                        tf.TensorSpec([None, None], tf.int64)])
    got_i, got_s = drop(tf.constant(indices), tf.constant(scores), tf.constant(exclude))
    want_i, want_s = reference_drop(indices, scores, exclude, 50)
    np.testing.assert_array_equal(got_i.numpy(), want_i)
    np.testing.assert_array_equal(got_s.numpy(), want_s)
    got_i, _ = drop(tf.constant(indices), tf.constant(scores), tf.zeros([4, 0], tf.int64))  # E = 0
    np.testing.assert_array_equal(got_i.numpy(), reference_drop(indices, scores, np.zeros((4, 0)), 50)[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        drop(tf.constant(indices), tf.constant(scores), tf.zeros([3, 2], tf.int64))


def test_drop_excluded_after_over_fetching_equals_exact_masking():
    """The two ways of excluding agree: exact top-(k+E) then drop == top-k of the masked scores."""
    rng = np.random.default_rng(7)
    queries, candidates = rng.normal(size=(10, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    exclude = padded_exclusions(rng, 10, 30, 300)
    fetched = exact_top_k(tf.constant(queries), tf.constant(candidates), 12 + 30)
    over_i, over_s = drop_excluded(*fetched, tf.constant(exclude), 12)
    masked_i, masked_s = exact_top_k(tf.constant(queries), tf.constant(candidates), 12, tf.constant(exclude))
    np.testing.assert_array_equal(over_i.numpy(), masked_i.numpy())
    np.testing.assert_array_equal(over_s.numpy(), masked_s.numpy())
