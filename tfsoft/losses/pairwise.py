"""Pairwise and pointwise baselines: BPR and BCE (SSM paper §4.1.1).

Both take the positive score [B] and negative scores [B, N] (any similarity, usually the
raw inner product) and return the per-example loss [B]. :func:`seen_negative_mask` masks the
negatives that are any of the user's training items (not only the positive).
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


def interaction_keys(user_ids, item_ids, num_items: int) -> tf.Tensor:
    """Sorted, unique int64 keys ``u·V + i`` of (user, item) pairs: the set
    :func:`seen_negative_mask` looks negatives up in (one key per training interaction).

    Args:
        user_ids, item_ids: [P] integer indices of the pairs; num_items: V, item indices < V.
    """
    keys = tf.cast(user_ids, tf.int64) * int(num_items) + tf.cast(item_ids, tf.int64)
    return tf.sort(tf.unique(tf.reshape(keys, [-1]))[0])


def seen_negative_mask(user_ids: tf.Tensor, negative_ids: tf.Tensor, seen_keys: tf.Tensor,
                       num_items: int) -> tf.Tensor:
    """[B, N] bool, False where the sampled negative j is one of the user's training items
    (``(u, j) ∈ S_u^+``), the positive included: BPR's negatives come from ``S_u^-`` (Rendle et
    al. 2009; TIL Eq. 10), so a draw that hits any item the user interacted with is masked,
    not only the row's own positive. A binary search in the sorted keys, O(B·N·log P).

    Args:
        user_ids: [B] user indices; negative_ids: [B, N] item indices.
        seen_keys: [P] sorted int64 keys from :func:`interaction_keys`.
        num_items: V used to build the keys.
    """
    keys = tf.cast(user_ids, tf.int64)[:, tf.newaxis] * int(num_items) + tf.cast(negative_ids, tf.int64)
    # a sentinel −1 first: the table is never empty and every search lands on a real entry
    table = tf.concat([tf.constant([-1], tf.int64), tf.cast(seen_keys, tf.int64)], axis=0)
    flat = tf.reshape(keys, [-1])
    position = tf.searchsorted(table, flat, side="right", out_type=tf.int64) - 1
    found = tf.equal(tf.gather(table, position), flat)
    return tf.reshape(tf.logical_not(found), tf.shape(keys))
