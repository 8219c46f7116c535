import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses import (
    bce_loss, bpr_loss, full_softmax_loss, in_batch_softmax_loss, sampled_softmax_loss, weighted_mean,
)
from tfsoft.losses import logits as steps

from tests.losses import reference as ref

def t(x):
    return tf.constant(x)


def grads(function, *arrays):
    variables = [tf.Variable(a) for a in arrays]
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(function(*variables))
    return float(value), [g.numpy() for g in tape.gradient(value, variables)]


def test_full_softmax_matches_reference_and_gradient(rng):
    query, catalog = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    positives = np.array([1, 2, 5, 1])
    valid = np.array([False, True, True, True, True, True])
    got = full_softmax_loss(t(query), t(catalog), t(positives), temperature=0.5, valid_items=t(valid)).numpy()
    np.testing.assert_allclose(got, ref.full_softmax(query, catalog, positives, 0.5, valid), rtol=1e-9, atol=1e-12)
    _, (g_query, g_catalog) = grads(
        lambda q, c: full_softmax_loss(q, c, t(positives), temperature=0.5, valid_items=t(valid)), query, catalog)
    numeric = ref.numeric_gradient(lambda q: ref.full_softmax(q, catalog, positives, 0.5, valid).sum(), query.copy())
    np.testing.assert_allclose(g_query, numeric, atol=1e-6)
    numeric = ref.numeric_gradient(lambda c: ref.full_softmax(query, c, positives, 0.5, valid).sum(), catalog.copy())
    np.testing.assert_allclose(g_catalog, numeric, atol=1e-6)
    assert np.allclose(g_catalog[0], 0)  # the masked OOV row gets no gradient


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("correct_positive", [True, False])
def test_sampled_softmax_matches_reference_with_log_q_and_accidental_hits(shared, correct_positive, rng):
    b, n, d = 5, 6, 3
    query, positive = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    positive_ids = np.array([3, 4, 5, 6, 7])
    if shared:
        negative_ids = np.array([3, 9, 4, 10, 11, 3])  # accidental hits for rows 0 and 1
        negatives = rng.normal(size=(n, d))
        neg_count = rng.normal(size=n)
    else:
        negative_ids = rng.integers(3, 9, size=(b, n))
        negatives = rng.normal(size=(b, n, d))
        neg_count = rng.normal(size=(b, n))
    pos_count = rng.normal(size=b) if correct_positive else None

    def loss(q, p, negs):
        return sampled_softmax_loss(q, p, t(positive_ids), negs, t(negative_ids), temperature=0.2,
                                    positive_log_expected_count=None if pos_count is None else t(pos_count),
                                    negative_log_expected_count=t(neg_count))

    def reference(q, p, negs):
        return ref.sampled_softmax(q, p, positive_ids, negs, negative_ids, 0.2, pos_count, neg_count)

    np.testing.assert_allclose(loss(t(query), t(positive), t(negatives)).numpy(),
                               reference(query, positive, negatives), rtol=1e-9, atol=1e-12)
    _, (gq, gp, gn) = grads(loss, query, positive, negatives)
    np.testing.assert_allclose(gq, ref.numeric_gradient(lambda x: reference(x, positive, negatives).sum(), query.copy()), atol=1e-6)
    np.testing.assert_allclose(gp, ref.numeric_gradient(lambda x: reference(query, x, negatives).sum(), positive.copy()), atol=1e-6)
    np.testing.assert_allclose(gn, ref.numeric_gradient(lambda x: reference(query, positive, x).sum(), negatives.copy()), atol=1e-6)


@pytest.mark.parametrize("log_q", [True, False])
@pytest.mark.parametrize("remove_duplicates", [True, False])
def test_in_batch_softmax_matches_reference(log_q, remove_duplicates, rng):
    b, extra, d = 5, 3, 4
    query = rng.normal(size=(b, d))
    candidates = rng.normal(size=(b + extra, d))
    ids = np.array([1, 2, 1, 3, 4, 9, 2, 8])  # duplicate positives (1) and a mixed negative equal to 2
    log_count = rng.normal(size=b + extra) if log_q else None
    positive_index = np.arange(b)

    def loss(q, c):
        return in_batch_softmax_loss(q, c, t(ids), positive_index=t(positive_index), temperature=0.1,
                                     candidate_log_expected_count=None if log_count is None else t(log_count),
                                     remove_duplicates=remove_duplicates)

    def reference(q, c):
        return ref.in_batch_softmax(q, c, ids, positive_index, 0.1, log_count, remove_duplicates)

    np.testing.assert_allclose(loss(t(query), t(candidates)).numpy(), reference(query, candidates), rtol=1e-9, atol=1e-12)
    _, (gq, gc) = grads(loss, query, candidates)
    np.testing.assert_allclose(gq, ref.numeric_gradient(lambda x: reference(x, candidates).sum(), query.copy()), atol=1e-5)
    np.testing.assert_allclose(gc, ref.numeric_gradient(lambda x: reference(query, x).sum(), candidates.copy()), atol=1e-5)


def test_in_batch_positive_index_offset_for_gathered_replicas(rng):
    query = rng.normal(size=(2, 3))
    candidates = rng.normal(size=(4, 3))  # replica 1 of 2: its positives are rows 2 and 3
    ids = np.array([5, 6, 7, 8])
    got = in_batch_softmax_loss(t(query), t(candidates), t(ids), positive_index=t(np.array([2, 3])), temperature=1.0)
    np.testing.assert_allclose(got.numpy(), ref.in_batch_softmax(query, candidates, ids, [2, 3], 1.0), rtol=1e-9, atol=1e-12)


def test_temperature_is_applied_before_log_q():
    # Expected values are written out by hand (never through steps.scale): s/τ − log Q.
    scores, log_count = t(np.array([[2.0, 1.0]])), t(np.array([0.5, -0.5]))
    corrected = steps.subtract_log_expected_count(steps.scale(scores, 0.1), log_count).numpy()
    np.testing.assert_allclose(corrected, [[2.0 / 0.1 - 0.5, 1.0 / 0.1 + 0.5]], rtol=1e-12)
    # through the loss: s/τ − logQ, not (s − logQ)/τ
    query, cands, ids = np.array([[1.0, 0.0]]), np.array([[0.6, 0.8], [0.0, 1.0]]), np.array([1, 2])
    got = in_batch_softmax_loss(t(query), t(cands), t(ids), temperature=0.1, candidate_log_expected_count=t(np.array([0.3, -0.2])))
    logits = np.array([0.6 / 0.1 - 0.3, 0.0 / 0.1 + 0.2])
    np.testing.assert_allclose(got.numpy(), [ref.logsumexp(logits) - logits[0]], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("function, reference", [(bpr_loss, ref.bpr), (bce_loss, ref.bce)])
def test_pairwise_losses_match_reference(function, reference, rng):
    pos, neg = rng.normal(size=4), rng.normal(size=(4, 3))
    keep = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=bool)
    np.testing.assert_allclose(function(t(pos), t(neg), t(keep)).numpy(), reference(pos, neg, keep), rtol=1e-9, atol=1e-12)
    _, (gp, gn) = grads(lambda p, n: function(p, n, t(keep)), pos, neg)
    np.testing.assert_allclose(gp, ref.numeric_gradient(lambda x: reference(x, neg, keep).sum(), pos.copy()), atol=1e-6)
    np.testing.assert_allclose(gn, ref.numeric_gradient(lambda x: reference(pos, x, keep).sum(), neg.copy()), atol=1e-6)


def test_weighted_mean_uses_global_batch_size_and_weights():
    per_example = t(np.array([1.0, 2.0, 3.0, 4.0]))
    assert float(weighted_mean(per_example)) == pytest.approx(2.5)
    weights = t(np.array([0.0, 1.0, 2.0, 0.5]))
    assert float(weighted_mean(per_example, weights)) == pytest.approx((2 + 6 + 2) / 4)
    assert float(weighted_mean(per_example, weights, global_batch_size=8)) == pytest.approx(10 / 8)


def test_cosine_preparation_normalises():
    x = steps.prepare_embeddings(t(np.array([[3.0, 4.0]])), "cosine").numpy()
    np.testing.assert_allclose(x, [[0.6, 0.8]])
    with pytest.raises(ConfigError, match=r"similarity must be one of \('dot', 'cosine'\); got 'l2'"):
        steps.prepare_embeddings(t(np.array([[1.0]])), "l2")


@pytest.mark.parametrize("layout", ["positive_index", "offset", "offset_tensor"])
@pytest.mark.parametrize("log_q", [True, False])
def test_in_batch_duplicates_with_replica_offset_and_mixed_negatives(log_q, layout, rng):
    # Replica 1 of 2 (its positives are columns 3..5) plus 3 mixed negatives: the label mask is
    # an off-diagonal band, duplicates of a row's positive sit on both replicas and among the
    # mixed negatives, and must be masked everywhere but in the row's own column.
    b, d = 3, 4
    query = rng.normal(size=(b, d))
    candidates = rng.normal(size=(2 * b + 3, d))
    ids = np.array([7, 5, 2, 5, 7, 5, 5, 9, 7])
    positive_index = np.array([3, 4, 5])
    log_count = rng.normal(size=len(ids)) if log_q else None
    where = {"positive_index": {"positive_index": t(positive_index)}, "offset": {"positive_offset": 3},
             "offset_tensor": {"positive_offset": tf.constant(3)}}[layout]

    def loss(q, c):
        return in_batch_softmax_loss(q, c, t(ids), temperature=0.2, **where,
                                     candidate_log_expected_count=None if log_count is None else t(log_count))

    def reference(q, c):
        return ref.in_batch_softmax(q, c, ids, positive_index, 0.2, log_count, True)

    np.testing.assert_allclose(loss(t(query), t(candidates)).numpy(), reference(query, candidates), rtol=1e-9, atol=1e-12)
    _, (gq, gc) = grads(loss, query, candidates)
    np.testing.assert_allclose(gq, ref.numeric_gradient(lambda x: reference(x, candidates).sum(), query.copy()), atol=1e-5)
    np.testing.assert_allclose(gc, ref.numeric_gradient(lambda x: reference(query, x).sum(), candidates.copy()), atol=1e-5)
    # in a tf.function, as in train_step
    np.testing.assert_allclose(tf.function(loss)(t(query), t(candidates)).numpy(), reference(query, candidates),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("remove_duplicates", [True, False])
def test_in_batch_default_layout_is_the_diagonal(remove_duplicates, rng):
    query, candidates = rng.normal(size=(5, 4)), rng.normal(size=(8, 4))
    ids = np.array([1, 2, 1, 3, 1, 9, 2, 8])
    got = in_batch_softmax_loss(t(query), t(candidates), t(ids), temperature=0.1, remove_duplicates=remove_duplicates)
    np.testing.assert_allclose(got.numpy(), ref.in_batch_softmax(query, candidates, ids, np.arange(5), 0.1, None,
                                                                 remove_duplicates), rtol=1e-9, atol=1e-12)


def test_duplicate_mask_is_same_item_but_not_own_column(rng):
    logits = t(np.zeros((2, 5)))
    ids, positive_index = t(np.array([4, 4, 6, 4, 6])), t(np.array([1, 2], dtype=np.int32))
    expected = np.array([[True, False, False, True, False], [False, False, False, False, True]])
    for kwargs in ({}, {"own_column": steps.positive_columns(positive_index, 5)}):
        masked = steps.mask_duplicate_positives(logits, ids, positive_index, **kwargs).numpy()
        np.testing.assert_array_equal(masked == steps.MASKED_LOGIT, expected)
    for offset in (1, tf.constant(1)):  # positive_index None: row i's positive is column i + offset
        masked = steps.mask_duplicate_positives(logits, ids, positive_offset=offset).numpy()
        np.testing.assert_array_equal(masked == steps.MASKED_LOGIT, expected)
    np.testing.assert_array_equal(steps.positive_columns(positive_index, 5).numpy(),
                                  [[False, True, False, False, False], [False, False, True, False, False]])
    np.testing.assert_array_equal(steps.diagonal_labels(tf.constant(2), tf.constant(5), 1, tf.float64).numpy(),
                                  [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    # masking adds MASKED_LOGIT: the masked entries' softmax weight is exactly 0
    logits = t(rng.normal(size=(2, 5)) * 10)
    masked = steps.mask_duplicate_positives(logits, ids, positive_index)
    np.testing.assert_array_equal(tf.nn.softmax(masked).numpy()[expected], 0.0)
    np.testing.assert_array_equal(masked.numpy()[~expected], logits.numpy()[~expected])
    half = steps.mask_duplicate_positives(tf.cast(logits, tf.float16), ids, positive_index)  # −1e9 is −inf here
    assert not np.isnan(tf.nn.softmax(half).numpy()).any()


def test_temperature_scales_query_or_logits_alike(rng):
    # Expected values in plain NumPy: s(q, c)/τ whether τ divides the query or the logits.
    query, candidates = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    expected = query @ candidates.T / 0.1
    np.testing.assert_allclose(tf.matmul(steps.scale(t(query), 0.1), t(candidates), transpose_b=True).numpy(),
                               expected, rtol=1e-12)
    np.testing.assert_allclose(steps.scale(tf.matmul(t(query), t(candidates), transpose_b=True), 0.1).numpy(),
                               expected, rtol=1e-12)
    np.testing.assert_allclose(steps.scale(t(query), tf.constant(0.25)).numpy(), query / 0.25, rtol=1e-7)
    x = t(query)
    assert steps.scale(x, 1.0) is x  # τ = 1 adds no op


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.float16])
def test_softmax_cross_entropy_is_logsumexp_minus_the_positive_with_softmax_minus_onehot_gradient(rng, dtype):
    from tfsoft.losses.softmax import softmax_cross_entropy

    logits = rng.normal(size=(6, 9)) * 4
    logits[:, 0] = -1e4  # a masked column (finite, very negative)
    positive = rng.integers(1, 9, size=6)
    variable = tf.Variable(tf.constant(logits, dtype))
    with tf.GradientTape() as tape:
        loss = softmax_cross_entropy(variable, tf.constant(positive))
        total = tf.reduce_sum(tf.cast(loss, tf.float32))
    gradient = tf.cast(tape.gradient(total, variable), tf.float64).numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    onehot = np.eye(9)[positive]
    tolerance = 2e-2 if dtype == tf.float16 else 1e-5
    assert loss.dtype == dtype
    np.testing.assert_allclose(tf.cast(loss, tf.float64).numpy(), -log_p[np.arange(6), positive], rtol=tolerance,
                               atol=tolerance)
    np.testing.assert_allclose(gradient, np.exp(log_p) - onehot, atol=tolerance)


def test_at_positive_picks_each_rows_positive_column(rng):
    values = rng.normal(size=(5, 7))
    positive = np.array([0, 6, 3, 3, 1])
    for index in (tf.constant(positive, tf.int64), tf.constant(positive, tf.int32)):
        np.testing.assert_array_equal(steps.at_positive(tf.constant(values), index).numpy(),
                                      values[np.arange(5), positive])


@pytest.mark.parametrize("dtype", [tf.float64, tf.float16])
def test_mask_columns_zeroes_masked_columns_in_the_softmax_and_passes_the_gradient(dtype, rng):
    logits = rng.normal(size=(3, 5))
    keep = np.array([False, True, True, False, True])
    variable = tf.Variable(tf.cast(logits, dtype))
    masked = steps.mask_columns(variable, t(keep))
    probabilities = tf.nn.softmax(tf.cast(masked, tf.float64)).numpy()
    expected = np.where(keep, np.exp(logits), 0)
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True),
                               rtol=1e-12 if dtype == tf.float64 else 2e-3)
    assert np.all(probabilities[:, ~keep] == 0)
    assert np.all(masked.numpy()[:, ~keep] <= steps.MASKED_LOGIT / 2)
    np.testing.assert_allclose(masked.numpy()[:, keep], logits[:, keep].astype(dtype.as_numpy_dtype))
    with tf.GradientTape() as tape:  # the gradient of the kept entries is the identity, masked ones get none
        loss = tf.reduce_sum(tf.cast(steps.mask_columns(variable, t(keep)), tf.float64) * keep)
    np.testing.assert_array_equal(tape.gradient(loss, variable).numpy(), np.broadcast_to(keep, logits.shape).astype(float))
