"""Pairwise and pointwise baselines: BPR and BCE (SSM paper §4.1.1).

Both take the positive score [B] and negative scores [B, N] (any similarity, usually the
raw inner product) and return the per-example loss [B].
"""

from __future__ import annotations

from tfsoft.backend import tf


def _keep_mask(negative_scores: tf.Tensor, negative_mask: tf.Tensor | None) -> tf.Tensor:
    if negative_mask is None:
        return tf.ones_like(negative_scores)
    return tf.cast(negative_mask, negative_scores.dtype)


def bpr_loss(
    positive_scores: tf.Tensor, negative_scores: tf.Tensor, negative_mask: tf.Tensor | None = None
) -> tf.Tensor:
    """Bayesian Personalised Ranking (Rendle et al., UAI 2009), with N negatives averaged:

    ``ℓ = −(1/N) Σ_k log σ(s⁺ − s⁻_k)``.

    Args:
        positive_scores: [B]; negative_scores: [B, N].
        negative_mask: optional [B, N] bool, False = ignore (accidental hits); a row with no
            valid negative has loss 0.
    """
    keep = _keep_mask(negative_scores, negative_mask)
    pair = -tf.math.log_sigmoid(positive_scores[:, tf.newaxis] - negative_scores)
    return tf.math.divide_no_nan(tf.reduce_sum(pair * keep, axis=1), tf.reduce_sum(keep, axis=1))


def bce_loss(
    positive_scores: tf.Tensor, negative_scores: tf.Tensor, negative_mask: tf.Tensor | None = None
) -> tf.Tensor:
    """Binary cross-entropy over one positive and N sampled negatives (1:4 in the SSM paper):

    ``ℓ = −[log σ(s⁺) + Σ_k log σ(−s⁻_k)] / (1 + N_valid)``  (mean over the binary instances).

    Args:
        positive_scores: [B]; negative_scores: [B, N]; negative_mask: optional [B, N] bool.
    """
    keep = _keep_mask(negative_scores, negative_mask)
    positive_term = -tf.math.log_sigmoid(positive_scores)
    negative_term = tf.reduce_sum(-tf.math.log_sigmoid(-negative_scores) * keep, axis=1)
    return (positive_term + negative_term) / (1.0 + tf.reduce_sum(keep, axis=1))
