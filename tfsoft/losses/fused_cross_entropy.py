"""The soft-target cross-entropy with a per-row target given by its logits, as one XLA kernel.

Per row i over the candidates j (SoftRec Eq. 4–5 with SoftRec's ½(d + onehot) folded in, as
:func:`tfsoft.losses.soft_targets.mixed_target_cross_entropy`):

    d_i = softmax(t_i)   (over the finite t_ij; a row with none finite has d_i = 0)
    ℓ_i = (b + a·Σ_j d_ij)·lse(z_i) − b·z_iy − a·Σ_j d_ij z_ij
    ∂ℓ_i/∂z_ij = (b + a·Σ_j d_ij)·softmax(z_i)_j − b·[j = y] − a·d_ij

This is the case of a **per-row** target over the **whole catalog** (a teacher under
``full_softmax``: [N, V] teacher logits). Written as TensorFlow ops it costs about ten passes
over [N, V] on a CPU (the target's softmax, its product with z, the logsumexp and a backward
pass each their own kernels); as one ``jit_compile`` function XLA fuses the forward into a few
row reductions and the backward into one elementwise pass that recomputes both softmaxes from
z and t instead of storing them. ``bench/bench_soft_target_overhead.py`` measures the step.

XLA compiles one kernel per shape, and the number of rows N changes every step under
``example_mode: user|window`` (the batch's non-padding positions). Rows are therefore padded up
to a bucket (:func:`row_bucket`: a multiple of 2^(⌊log2 N⌋ − 3), at most 12.5 % more rows, at
most eight shapes per doubling of N); padded rows have no target and are dropped from the output.
"""

from __future__ import annotations

from tfsoft.backend import tf


def row_bucket(rows: tf.Tensor) -> tf.Tensor:
    """``rows`` rounded up to a multiple of 2^max(0, ⌊log2 rows⌋ − 3) (scalar int32)."""
    rows = tf.cast(rows, tf.int32)
    exponent = tf.math.floor(tf.math.log(tf.cast(tf.maximum(rows, 1), tf.float32)) / tf.math.log(2.0))
    step = tf.bitwise.left_shift(1, tf.maximum(tf.cast(exponent, tf.int32) - 3, 0))
    return (rows + step - 1) // step * step


@tf.function(jit_compile=True)
def _forward(logits, positive_index, target_logits, target_weight, positive_weight):
    """Per-row loss, logsumexp(z) and logsumexp(t) (+inf for a row with no finite t)."""
    z_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    z_lse = z_max + tf.math.log(tf.reduce_sum(tf.exp(logits - z_max), axis=-1, keepdims=True))
    t_max = tf.reduce_max(target_logits, axis=-1, keepdims=True)
    has_target = tf.math.is_finite(t_max)
    t_shift = tf.where(has_target, t_max, tf.zeros_like(t_max))
    t_exp = tf.exp(target_logits - t_shift)  # 0 at −inf
    t_sum = tf.reduce_sum(t_exp, axis=-1, keepdims=True)
    expected = tf.math.divide_no_nan(tf.reduce_sum(t_exp * logits, axis=-1, keepdims=True), t_sum)
    mass = positive_weight + target_weight * tf.cast(has_target, logits.dtype)
    positive = tf.gather(logits, positive_index, axis=1, batch_dims=1)
    loss = mass[:, 0] * z_lse[:, 0] - positive_weight * positive - target_weight * expected[:, 0]
    t_lse = tf.where(has_target, t_shift + tf.math.log(t_sum), tf.fill(tf.shape(t_sum), float("inf")))
    return loss, z_lse, t_lse


@tf.function(jit_compile=True)
def _backward(upstream, logits, positive_index, target_logits, z_lse, t_lse, target_weight, positive_weight):
    """∂(Σ_i upstream_i·ℓ_i)/∂z, both softmaxes recomputed (exp(t − ∞) = 0 for a row without target)."""
    mass = positive_weight + target_weight * tf.cast(tf.math.is_finite(t_lse), logits.dtype)
    upstream = upstream[:, tf.newaxis]
    gradient = upstream * (mass * tf.exp(logits - z_lse) - target_weight * tf.exp(target_logits - t_lse))
    onehot = tf.one_hot(positive_index, tf.shape(logits)[-1], dtype=logits.dtype)
    return gradient - (positive_weight * upstream) * onehot


def _padded(value: tf.Tensor, rows: tf.Tensor, fill) -> tf.Tensor:
    padding = [[0, rows - tf.shape(value)[0]]] + [[0, 0]] * (value.shape.rank - 1)
    return tf.pad(value, padding, constant_values=fill)


def fused_target_cross_entropy(
    logits: tf.Tensor, positive_index: tf.Tensor, target_logits: tf.Tensor, target_weight: float,
    positive_weight: float,
) -> tf.Tensor:
    """``H(a·softmax(t) + b·onehot_y, softmax(z))`` per row ([N]), fused by XLA (module docstring).

    The value and the gradient are those of
    :func:`~tfsoft.losses.soft_targets.mixed_target_cross_entropy` with
    ``target = restricted softmax(t)`` (``tests/losses/test_fused_cross_entropy.py``).

    Args:
        logits: [N, C] the student's (corrected, masked: masked columns finite and very negative).
        positive_index: [N] column of y.
        target_logits: [N, C] the target's log-weights, −inf where it is masked (the target is
            their softmax; a constant: no gradient flows into it).
        target_weight: a; positive_weight: b (Python numbers).
    """
    dtype = logits.dtype
    z = tf.cast(logits, tf.float32)
    t = tf.stop_gradient(tf.cast(target_logits, tf.float32))
    y = tf.cast(positive_index, tf.int32)
    a, b = tf.constant(float(target_weight), tf.float32), tf.constant(float(positive_weight), tf.float32)
    rows = tf.shape(z)[0]
    bucket = row_bucket(rows)
    t_padded = _padded(t, bucket, float("-inf"))
    y_padded = _padded(y, bucket, 0)

    @tf.custom_gradient
    def loss_of(z):
        z_padded = _padded(z, bucket, 0.0)
        loss, z_lse, t_lse = _forward(z_padded, y_padded, t_padded, a, b)

        def gradient(upstream):
            upstream = _padded(tf.cast(upstream, tf.float32), bucket, 0.0)
            return _backward(upstream, z_padded, y_padded, t_padded, z_lse, t_lse, a, b)[:rows]

        return loss[:rows], gradient

    return tf.cast(loss_of(z), dtype)
