"""The generator's input: a user's principal interest η_u and the triplet states (TIL Eq. 4–6).

Eq. 5–6 are garbled in the published text; this is the reading consistent with W1 ∈ ℝ^{h×2d}
(two d-sized halves, one per item of the triplet):

- Uni-Interest (Eq. 5): ``s = (q_i⊙p_u + q_i⊙η_u) ‖ (q_j⊙p_u + q_j⊙η_u)``;
- Multi-Interest (Eq. 6): each half adds ``α·(μ_c⊙p_u + μ_c⊙η_u)``, μ_c the centre of the
  item's cluster: ``s = (q_i + α μ_{c_i})⊙(p_u + η_u) ‖ (q_j + α μ_{c_j})⊙(p_u + η_u)``.

Both are ``[x_i ‖ x_j]⊙(p_u + η_u)`` with ``x = q`` (UI) or ``x = q + α μ_c`` (MI), which is how
:func:`triplet_state` computes them.
"""

from __future__ import annotations

from tfsoft.backend import tf


def interest_matrix(users, items, num_users: int, num_items: int) -> tf.SparseTensor:
    """[U, V] sparse A with A_uv = 1/|S_u^+| for v ∈ S_u^+ (each user's distinct training items), so
    that ``A·Q`` holds every η_u (:func:`principal_interest`). One entry per distinct pair.

    Args:
        users, items: [P] training pairs (repeats allowed); num_users, num_items: U, V.
    """
    import numpy as np

    pairs = np.unique(np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=num_users).astype(np.float64)
    values = 1.0 / counts[pairs[:, 0]] if len(pairs) else np.zeros(0)
    return tf.SparseTensor(pairs.reshape(-1, 2), values.astype(np.float32), [int(num_users), int(num_items)])


def principal_interest(item_embeddings: tf.Tensor, interest: tf.SparseTensor, users: tf.Tensor) -> tf.Tensor:
    """η_u = (1/|S_u^+|) Σ_{v∈S_u^+} q_v, the mean embedding of each user's training items (Eq. 4).

    One sparse product over every training pair, ``A·Q`` (O(P·d)), then the batch's rows: cheaper
    than gathering each example's items when active users fill the batch (a batch of 1,024 on
    lastfm_small holds 134k history rows, the whole training set 42k pairs).

    Args:
        item_embeddings: [V, d] q of every item; interest: [U, V] from :func:`interest_matrix`.
        users: [B] user indices.
    Returns:
        [B, d]; a user without items gets zeros.
    """
    matrix = tf.sparse.SparseTensor(interest.indices, tf.cast(interest.values, item_embeddings.dtype),
                                    interest.dense_shape)
    return tf.gather(tf.sparse.sparse_dense_matmul(matrix, item_embeddings), users)


def triplet_state(user: tf.Tensor, interest: tf.Tensor, positive: tf.Tensor, negatives: tf.Tensor,
                  positive_centre: tf.Tensor | None = None, negative_centres: tf.Tensor | None = None,
                  alpha: float | tf.Tensor = 0.0) -> tf.Tensor:
    """s_uij for every (example, negative): Uni-Interest without centres, Multi-Interest with them.

    ``s = (q_i + α μ_{c_i})⊙(p_u + η_u) ‖ (q_j + α μ_{c_j})⊙(p_u + η_u)`` (module docstring).

    Args:
        user: [B, d] p_u; interest: [B, d] η_u.
        positive: [B, d] q_i; negatives: [B, N, d] q_j.
        positive_centre: [B, d] μ_{c_i}; negative_centres: [B, N, d] μ_{c_j} (both or neither).
        alpha: α of Eq. 6.
    Returns:
        [B, N, 2d].
    """
    if (positive_centre is None) != (negative_centres is None):
        raise ValueError("triplet_state takes both cluster centres (Multi-Interest) or neither (Uni-Interest)")
    if positive.shape.rank != 2 or negatives.shape.rank != 3:
        raise ValueError(f"triplet_state: positive must be [B, d] and negatives [B, N, d]; got {positive.shape} "
                         f"and {negatives.shape}")
    if positive_centre is not None:
        positive = positive + alpha * positive_centre
        negatives = negatives + alpha * negative_centres
    context = (user + interest)[:, tf.newaxis, :]                          # [B, 1, d]
    left = tf.broadcast_to(positive[:, tf.newaxis, :] * context, tf.shape(negatives))
    return tf.concat([left, negatives * context], axis=-1)
