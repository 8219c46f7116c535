"""The XLA-fused soft-target cross-entropy (a per-row target given by its logits) against a
float64 NumPy reference and against the unfused loss, value and gradient; the row buckets."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.losses.fused_cross_entropy import fused_target_cross_entropy, row_bucket
from tfsoft.losses.soft_targets import mixed_target_cross_entropy, restricted_target


def _softmax(x):
    """Softmax over the finite entries of each row; a row with none is all zeros."""
    finite = np.isfinite(x)
    shift = np.where(finite.any(axis=1, keepdims=True), np.where(finite, x, -np.inf).max(axis=1, keepdims=True), 0.0)
    e = np.where(finite, np.exp(np.where(finite, x, 0.0) - shift), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def reference(z, y, t, a, b):
    """ℓ = −Σ_j (a·d_j + b·[j = y])·log softmax(z)_j and its gradient, d = softmax(t) (float64)."""
    d = _softmax(t)
    label = a * d
    label[np.arange(len(z)), y] += b
    log_p = z - z.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    loss = -(label * log_p).sum(axis=1)
    gradient = label.sum(axis=1, keepdims=True) * np.exp(log_p) - label
    return loss, gradient


def _problem(rng, rows, columns=12):
    z = rng.normal(size=(rows, columns)) * 3
    z[:, 0] = -1e9  # a masked column of the student: finite and very negative
    t = rng.normal(size=(rows, columns)) * 2
    t[:, 0] = -np.inf  # masked in the target too
    t[1, 3:7] = -np.inf  # a row with more masked columns
    t[2, :] = -np.inf  # a row with no target: only the b·CE term
    y = rng.integers(1, columns, size=rows)
    upstream = rng.uniform(0.5, 2.0, size=rows)  # per-row weights, as a weighted mean gives them
    return z, y, t, upstream


def _loss_and_gradient(function, z, y, t, upstream, a, b):
    logits = tf.Variable(z.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = function(logits, tf.constant(y), tf.constant(t, tf.float32), a, b)
        total = tf.reduce_sum(loss * tf.constant(upstream, tf.float32))
    return loss.numpy(), tape.gradient(total, logits).numpy()


@pytest.mark.parametrize("rows", [5, 17, 40])  # 17 and 40: padded to buckets of 18 and 40
@pytest.mark.parametrize("a,b", [(0.25, 0.75), (0.5, 0.5), (1.0, 0.0)])
def test_value_and_gradient_match_numpy(rng, rows, a, b):
    z, y, t, upstream = _problem(rng, rows)
    loss, gradient = _loss_and_gradient(fused_target_cross_entropy, z, y, t, upstream, a, b)
    expected_loss, expected_gradient = reference(z, y, t, a, b)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gradient, upstream[:, None] * expected_gradient, rtol=1e-4, atol=1e-6)
    assert loss[2] == pytest.approx(b * (np.log(np.exp(z[2, 1:] - z[2].max()).sum()) + z[2].max() - z[2, y[2]]),
                                    rel=1e-5)


def test_equals_the_unfused_loss_over_the_restricted_target(rng):
    z, y, t, upstream = _problem(rng, 17)

    def unfused(logits, positive, target_logits, a, b):
        return mixed_target_cross_entropy(logits, positive, restricted_target(target_logits), a, b)

    for fused, plain in zip(_loss_and_gradient(fused_target_cross_entropy, z, y, t, upstream, 0.3, 0.7),
                            _loss_and_gradient(unfused, z, y, t, upstream, 0.3, 0.7)):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)


def test_no_gradient_flows_into_the_target(rng):
    z, y, t, _ = _problem(rng, 5)
    target = tf.Variable(np.where(np.isfinite(t), t, -1e30).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fused_target_cross_entropy(tf.constant(z, tf.float32), tf.constant(y), target, 0.5, 0.5))
    assert tape.gradient(loss, target) is None


def test_row_buckets_add_at_most_an_eighth_and_eight_shapes_per_doubling():
    rows = np.arange(1, 5000)
    buckets = np.array([int(row_bucket(tf.constant(n))) for n in rows])
    assert (buckets >= rows).all()
    assert (buckets - rows <= np.maximum(rows // 8, 0)).all()
    assert list(buckets[:16]) == list(range(1, 17))  # below 16 rows: every count its own shape
    assert int(row_bucket(tf.constant(1950))) == 2048 and int(row_bucket(tf.constant(2100))) == 2304
    for k in range(4, 12):  # the shapes XLA compiles between two powers of two
        assert len({int(b) for b in buckets if 2 ** k <= b < 2 ** (k + 1)}) == 8
