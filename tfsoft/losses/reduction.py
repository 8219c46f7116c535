"""From per-example losses to the scalar a replica differentiates."""

from __future__ import annotations

from tfsoft.backend import tf


def weighted_mean(
    per_example: tf.Tensor, sample_weight: tf.Tensor | None = None, global_batch_size: tf.Tensor | int | None = None
) -> tf.Tensor:
    """``Σ_i w_i ℓ_i / B_global`` (Keras' SUM_OVER_BATCH_SIZE convention).

    Dividing by the *global* batch size (not Σw, not the replica's batch) makes the sum of the
    replicas' gradients, which ``tf.distribute`` all-reduces, the gradient of the global mean.
    A weight of 0 removes an example; weights scale their example's gradient linearly.

    Args:
        per_example: [B] losses of this replica's examples.
        sample_weight: optional [B] non-negative weights (default 1).
        global_batch_size: examples across all replicas; default: the sum of every replica's
            B (:func:`tfsoft.distribute.global_count`; replicas may hold different counts).
    """
    per_example = tf.cast(per_example, tf.float32)
    if sample_weight is not None:
        per_example = per_example * tf.cast(tf.reshape(sample_weight, tf.shape(per_example)), tf.float32)
    if global_batch_size is None:
        from tfsoft.distribute import global_count

        global_batch_size = global_count(tf.shape(per_example)[0])
    return tf.reduce_sum(per_example) / tf.cast(global_batch_size, tf.float32)
