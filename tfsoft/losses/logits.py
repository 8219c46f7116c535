"""Small steps of the retrieval logits pipeline: score, scale, correct, mask.

Every softmax-family loss builds its logits from these steps, in this order::

    logits = similarity(q, c) / temperature - log(expected count of c under Q)   (then masking)

**Temperature before logQ.** The logQ correction (Bengio & Senecal 2008; Yi et al., RecSys
2019, Eq. 3; SSM paper §2) corrects the *model's* logits ``s/τ`` for the proposal that drew
the candidates, so it is subtracted *after* dividing by τ: ``s/τ − log Q``. TensorFlow
Recommenders' ``tasks.Retrieval`` does the same (temperature, then
``SamplingProbablityCorrection``). Merlin Models' contrastive output divides the corrected
logits by the temperature, i.e. ``(s − log Q)/τ``, which scales the correction by 1/τ and
over-corrects for τ < 1; we do not follow it.
``tests/losses/test_softmax.py::test_temperature_is_applied_before_log_q`` pins the order.
"""

from __future__ import annotations

from tfsoft.backend import tf
from tfsoft.errors import ConfigError

#: Logit given to masked entries: finite (no NaN in gradients), exp() underflows to 0.
MASKED_LOGIT = -1e9
SIMILARITIES = ("dot", "cosine")


def normalize(embeddings: tf.Tensor) -> tf.Tensor:
    """Unit L2 norm along the last axis (cosine similarity = dot product of normalised vectors)."""
    return tf.math.l2_normalize(embeddings, axis=-1, epsilon=1e-12)


def check_similarity(similarity, key: str = "similarity") -> str:
    """``similarity`` if it is one of :data:`SIMILARITIES`, else a ConfigError naming ``key``."""
    if similarity not in SIMILARITIES:
        raise ConfigError(f"{key} must be one of {SIMILARITIES}; got {similarity!r}")
    return similarity


def prepare_embeddings(embeddings: tf.Tensor, similarity: str) -> tf.Tensor:
    """Embeddings ready for a dot product under ``similarity`` (``"dot"`` or ``"cosine"``)."""
    if check_similarity(similarity) == "cosine":
        return normalize(embeddings)
    return embeddings


def scale(logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """``logits / τ``. With cosine similarity τ in [0.1, 0.2] works best (SSM paper §3.1.2).

    Also used on the query before the matmul, ``s(q, c)/τ = (q/τ)·c``, which scales [B, d]
    values instead of [B, M] logits. τ = 1 adds no op.
    """
    if isinstance(temperature, (int, float)):
        if temperature == 1:
            return logits
        temperature = tf.constant(temperature, dtype=logits.dtype)  # exact in float64
    return logits / tf.cast(temperature, logits.dtype)


def subtract_log_expected_count(logits: tf.Tensor, log_expected_count: tf.Tensor) -> tf.Tensor:
    """logQ correction: ``logits − log E[count]`` per candidate column.

    Args:
        logits: [B, M] scaled logits.
        log_expected_count: [M] (shared candidates) or [B, M] (per-example candidates):
            log of the expected number of times each candidate appears among the sampled
            candidates (``N·Q(j)`` for N draws from Q; ``B·p_j`` for in-batch candidates).
    """
    return logits - tf.cast(log_expected_count, logits.dtype)


def mask_accidental_hits(logits: tf.Tensor, positive_ids: tf.Tensor, negative_ids: tf.Tensor) -> tf.Tensor:
    """Mask sampled negatives that are the example's own positive (an "accidental hit").

    Args:
        logits: [B, N] negative logits.
        positive_ids: [B] item id of each example's positive.
        negative_ids: [N] (shared) or [B, N] (per-example) sampled item ids.
    """
    if negative_ids.shape.rank == 1:
        negative_ids = negative_ids[tf.newaxis, :]
    hits = tf.equal(positive_ids[:, tf.newaxis], negative_ids)
    return tf.where(hits, tf.cast(MASKED_LOGIT, logits.dtype), logits)


def at_positive(values: tf.Tensor, positive_index: tf.Tensor) -> tf.Tensor:
    """``values[b, positive_index[b]]`` for every row b: [B, M] -> [B] (the positive's logit,
    log-probability or candidate id)."""
    return tf.gather(values, tf.cast(positive_index, tf.int32), axis=1, batch_dims=1)


def positive_columns(positive_index: tf.Tensor, num_candidates: tf.Tensor) -> tf.Tensor:
    """[B, M] bool, True at each row's positive column (any ``positive_index``)."""
    columns = tf.range(tf.cast(num_candidates, positive_index.dtype), dtype=positive_index.dtype)
    return tf.equal(positive_index[:, tf.newaxis], columns[tf.newaxis, :])


def diagonal_labels(batch: tf.Tensor, num_candidates: tf.Tensor, offset, dtype) -> tf.Tensor:
    """[B, M] one-hot labels when row i's positive is column ``i + offset`` (in-batch layout).

    A diagonal written straight into a zero matrix: cheaper than comparing [B, M] indices.
    """
    return tf.linalg.diag(tf.ones(tf.reshape(batch, [1]), dtype), k=offset, num_rows=batch, num_cols=num_candidates)


def add_mask(logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``logits + MASKED_LOGIT`` where ``mask`` is True: exp() of a masked entry underflows to
    exactly 0, as if the entry were replaced, and the gradient w.r.t. ``logits`` needs no select.
    (float16, where −1e9 overflows to −inf and 0·−inf would be NaN: replaced instead.)"""
    if logits.dtype == tf.float16:
        return tf.where(mask, tf.cast(MASKED_LOGIT, logits.dtype), logits)
    return logits + tf.cast(mask, logits.dtype) * tf.cast(MASKED_LOGIT, logits.dtype)


def mask_duplicate_positives(
    logits: tf.Tensor,
    candidate_ids: tf.Tensor,
    positive_index: tf.Tensor | None = None,
    *,
    own_column: tf.Tensor | None = None,
    positive_offset=0,
) -> tf.Tensor:
    """In-batch: mask columns holding the same item as the row's positive (but not the positive).

    When two examples of a batch share a positive item, each would otherwise be pushed away
    from its own positive through the other column. Masked entries get ``MASKED_LOGIT`` added
    (:func:`add_mask`).

    The row's own column always holds its positive item, so the mask is "same item" with the
    own column cleared: one [B, M] comparison of ids, then the diagonal (``positive_index``
    None) or an XOR with the label mask (any ``positive_index``).

    Args:
        logits: [B, M] logits against M candidates.
        candidate_ids: [M] item id of each candidate column.
        positive_index: [B] column of each row's positive; None = column ``i + positive_offset``.
        own_column: optional [B, M] bool label mask of ``positive_index``
            (:func:`positive_columns`), when the caller already built it.
        positive_offset: int or scalar int32 tensor, used when ``positive_index`` is None
            (the replica's first row in cross-replica gathered candidates).
    """
    if positive_index is None:
        batch = tf.shape(logits)[0]
        rows = tf.range(batch)
        if not (isinstance(positive_offset, int) and positive_offset == 0):
            rows = rows + positive_offset
        positive_ids = tf.gather(candidate_ids, rows)
        same_item = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
        duplicate = tf.linalg.set_diag(same_item, tf.zeros(tf.reshape(batch, [1]), tf.bool), k=positive_offset)
    else:
        if own_column is None:
            own_column = positive_columns(positive_index, tf.shape(candidate_ids)[0])
        positive_ids = tf.gather(candidate_ids, positive_index)
        same_item = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
        duplicate = tf.not_equal(same_item, own_column)
    return add_mask(logits, duplicate)


def mask_columns(logits: tf.Tensor, column_mask: tf.Tensor) -> tf.Tensor:
    """Mask whole columns (e.g. the padding/OOV row of the catalog in full softmax).

    As :func:`add_mask` of the broadcast [M] offset: the same result as replacing the masked
    entries once they pass through a softmax, and, unlike a select, no pass over [B, M] in the
    backward (the gradient of an addition is the identity).

    Args:
        logits: [B, M]; column_mask: [M] bool, True = keep.
    """
    return add_mask(logits, tf.logical_not(tf.cast(column_mask, tf.bool))[tf.newaxis, :])
