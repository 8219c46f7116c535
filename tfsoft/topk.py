"""Exact top-k over the catalog, with per-query exclusions: one implementation for the code base.

Item indices follow the vocabulary convention: index 0 is the OOV/padding item and is never
recommended; known items are ``1 .. V-1``. Three plain functions (tensor in -> tensor out,
usable eagerly and inside ``tf.function`` with an unknown batch size):

* :func:`mask_excluded` — ``scores[b, j] = LOWEST_SCORE`` for ``j = 0`` and every excluded
  ``j``: one scatter of ``B·(E+1)`` entries, O(B·E), never a [B, V, E] comparison.
* :func:`exact_top_k` — ``top_k(mask(Q·Cᵀ))``: exact maximum inner product search.
* :func:`drop_excluded` — the filter for an approximate index (ScaNN) that was asked for
  ``k + E`` results: excluded ids are found by binary search in each row's sorted exclusions,
  O((n + E)·log E) per row, never a [B, n, E] comparison.

**Empty slots.** When a row has fewer than ``k`` allowed items (a catalog smaller than
``k + exclusions``), the slots left over hold index 0 and the score :data:`LOWEST_SCORE`
(``float32`` lowest, finite: JSON-encodable). Servers map index 0 to the padding id.

Example:
    >>> queries = tf.constant([[1.0, 0.0]])
    >>> catalog = tf.constant([[9.0, 9.0], [0.75, 0.0], [0.5, 0.0], [0.25, 0.0]])  # row 0 = OOV
    >>> indices, scores = exact_top_k(queries, catalog, k=2, exclude=tf.constant([[1, -1]], tf.int64))
    >>> indices.numpy().tolist(), scores.numpy().tolist()
    ([[2, 3]], [[0.5, 0.25]])
"""

from __future__ import annotations

import numpy as np

from tfsoft.backend import tf

#: Score of an empty or masked slot: the lowest finite float32.
LOWEST_SCORE = float(np.finfo(np.float32).min)
_INT32_MAX = int(np.iinfo(np.int32).max)


def _check_rank(tensor, rank: int, what: str) -> None:
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"{what} must have rank {rank}; got shape {tensor.shape}")


def _check_batches(a, b, what_a: str, what_b: str):
    """Static check when both batch sizes are known, else a runtime assertion (returned)."""
    static_a, static_b = a.shape[0], b.shape[0]
    if static_a is not None and static_b is not None:
        if static_a != static_b:
            raise ValueError(f"{what_a} and {what_b} must have the same batch size; got shapes {a.shape} and {b.shape}")
        return None
    return tf.debugging.assert_equal(tf.shape(a)[0], tf.shape(b)[0],
                                     message=f"{what_a} and {what_b} must have the same batch size")


def _no_exclusions(batch_like):
    return tf.zeros([tf.shape(batch_like)[0], 0], tf.int64)


def mask_excluded(scores, exclude):
    """Scores with the OOV column 0 and each row's excluded items set to :data:`LOWEST_SCORE`.

    ``out[b, j] = LOWEST_SCORE  if j = 0 or j ∈ exclude[b]  else  scores[b, j]``

    One ``tf.tensor_scatter_nd_update`` of ``B·(E + 1)`` entries (O(B·E) besides the copy of
    ``scores``). Entries of ``exclude`` outside ``1 .. V-1`` (padding: 0, -1, or ids unknown to
    the catalog) are ignored; duplicates are harmless.

    Args:
        scores: [B, V] float scores over the whole catalog (column ``j`` = item index ``j``).
        exclude: [B, E] integer item indices to remove from row ``b`` (``E`` may be 0).

    Returns:
        [B, V] scores, same dtype.

    Example:
        >>> mask_excluded(tf.constant([[5.0, 4.0, 3.0, 2.0]]), tf.constant([[2, 0, 7]])).numpy()[0, :3]
        array([-3.4028235e+38,  4.0000000e+00, -3.4028235e+38], dtype=float32)
    """
    scores = tf.convert_to_tensor(scores)
    exclude = tf.cast(tf.convert_to_tensor(exclude), tf.int64)
    _check_rank(scores, 2, "scores")
    _check_rank(exclude, 2, "exclude")
    check = _check_batches(scores, exclude, "scores", "exclude")
    with tf.control_dependencies([check] if check is not None else []):
        num_items = tf.shape(scores, out_type=tf.int64)[1]
        batch = tf.shape(exclude, out_type=tf.int64)[0]
        valid = tf.logical_and(exclude > 0, exclude < num_items)
        columns = tf.concat([tf.zeros([batch, 1], tf.int64), tf.where(valid, exclude, tf.zeros_like(exclude))], axis=1)
        rows = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(columns, out_type=tf.int64))
        positions = tf.reshape(tf.stack([rows, columns], axis=-1), [-1, 2])  # invalid ones -> column 0
        updates = tf.fill(tf.shape(positions)[:1], tf.constant(LOWEST_SCORE, scores.dtype))
        return tf.tensor_scatter_nd_update(scores, positions, updates)


def _capped_k(k, limit):
    """``min(k, limit)``: a Python int when both are static (static output shapes), else a tensor."""
    if isinstance(k, (int, np.integer)) and isinstance(limit, (int, np.integer)):
        return max(0, min(int(k), int(limit)))
    return tf.maximum(tf.minimum(tf.cast(k, tf.int32), tf.cast(limit, tf.int32)), 0)


def exact_top_k(queries, candidates, k, exclude=None):
    """Exact top-``k`` items by inner product, excluded items and the OOV row 0 removed.

    ``s = mask(Q·Cᵀ)`` (:func:`mask_excluded`), then ``tf.math.top_k(s, k')`` with
    ``k' = min(k, V - 1)``; equal scores keep the lower item index first. Rows with fewer than
    ``k'`` allowed items get empty slots: index 0, score :data:`LOWEST_SCORE`.

    Args:
        queries: [B, d] query embeddings (already normalised for cosine similarity).
        candidates: [V, d] candidate embeddings in item-index order; row 0 = OOV, never returned.
        k: results per query (int or scalar tensor).
        exclude: optional [B, E] integer item indices to leave out (padding <= 0 or >= V ignored).

    Returns:
        ``(indices, scores)``: [B, k'] int32 item indices (>= 1, or 0 in an empty slot), best
        first, and their [B, k'] scores.

    Example:
        >>> catalog = tf.constant([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> exact_top_k(tf.constant([[0.2, 1.0]]), catalog, k=5)[0].numpy().tolist()
        [[2, 1]]
    """
    queries, candidates = tf.convert_to_tensor(queries), tf.convert_to_tensor(candidates)
    _check_rank(queries, 2, "queries")
    _check_rank(candidates, 2, "candidates")
    scores = tf.matmul(queries, candidates, transpose_b=True)
    scores = mask_excluded(scores, _no_exclusions(queries) if exclude is None else exclude)
    num_items = candidates.shape[0] if candidates.shape[0] is not None else tf.shape(candidates)[0]
    top = tf.math.top_k(scores, k=_capped_k(k, num_items - 1))
    empty = top.values <= tf.constant(LOWEST_SCORE, top.values.dtype)
    return tf.where(empty, tf.zeros_like(top.indices), top.indices), top.values


def drop_excluded(indices, scores, exclude, k):
    """Best ``k`` of an approximate index's ``n`` results after removing excluded and invalid ones.

    ``keep[b, i] = indices[b, i] > 0  and  indices[b, i] ∉ exclude[b]``; dropped results get
    score :data:`LOWEST_SCORE` and index 0, then ``tf.math.top_k`` keeps the best
    ``min(k, n)`` (kept results stay in their order; empty slots go last). Membership is a
    binary search (``tf.searchsorted``) in each row's exclusions sorted once:
    O((n + E)·log E) per row and [B, n + E] memory, where comparing every result with every
    exclusion needs a [B, n, E] tensor (26 GB for B = 256, E = 10,000;
    ``bench/bench_exclusion.py`` times both).

    Args:
        indices: [B, n] integer item indices from the index (<= 0 = no result), best first.
        scores: [B, n] their scores.
        exclude: [B, E] integer item indices to remove (``E`` may be 0; any padding value that
            is not a returned index, e.g. 0 or -1, is harmless).
        k: results to keep (int or scalar tensor).

    Returns:
        ``(indices, scores)``: [B, min(k, n)] int64 item indices (0 in an empty slot) and scores.

    Example:
        >>> drop_excluded(tf.constant([[4, 2, 0, 7]]), tf.constant([[0.9, 0.8, 0.7, 0.6]]),
        ...               tf.constant([[4, -1]], tf.int64), k=2)[0].numpy().tolist()
        [[2, 7]]
    """
    indices = tf.cast(tf.convert_to_tensor(indices), tf.int64)
    scores = tf.convert_to_tensor(scores)
    exclude = tf.cast(tf.convert_to_tensor(exclude), tf.int64)
    for tensor, what in ((indices, "indices"), (scores, "scores"), (exclude, "exclude")):
        _check_rank(tensor, 2, what)
    check = _check_batches(indices, exclude, "indices", "exclude")
    with tf.control_dependencies([check] if check is not None else []):
        # membership in int32 (item indices are int32 in top_k anyway; sorting and searching
        # int32 is faster): out-of-range values clip to -1 / int32 max, which match no item
        ids, banned = (tf.cast(tf.clip_by_value(x, -1, _INT32_MAX), tf.int32) for x in (indices, exclude))
        # a sentinel column keeps E + 1 >= 1 entries, so the gather below is valid for E = 0
        sentinel = tf.fill([tf.shape(banned)[0], 1], tf.constant(_INT32_MAX, tf.int32))
        ordered = tf.concat([tf.sort(banned, axis=1), sentinel], axis=1)  # [B, E + 1]
        position = tf.searchsorted(ordered, ids, side="left")  # first entry >= the index
        hit = tf.logical_and(tf.equal(tf.gather(ordered, position, batch_dims=1), ids), ids < _INT32_MAX)
        drop = tf.logical_or(hit, indices <= 0)
        scores = tf.where(drop, tf.constant(LOWEST_SCORE, scores.dtype), scores)
        indices = tf.where(drop, tf.zeros_like(indices), indices)
        top = tf.math.top_k(scores, k=_capped_k(k, scores.shape[1] if scores.shape[1] is not None
                                                 else tf.shape(scores)[1]))
        return tf.gather(indices, top.indices, batch_dims=1), top.values
