"""Small steps of the retrieval logits pipeline: score, scale, correct, mask.

Every softmax-family loss builds its logits from these steps, in this order::

    logits = similarity(q, c) / temperature - log(expected count of c under Q)   (then masking)

**Temperature before logQ.** The logQ correction (Bengio & Senecal 2008; Yi et al., RecSys
2019, Eq. 3; SSM paper §2) corrects the *model's* logits ``s/τ`` for the proposal that drew
the candidates, so it is subtracted *after* dividing by τ: ``s/τ − log Q``. TensorFlow
Recommenders' ``tasks.Retrieval`` does the same (temperature, then
``SamplingProbablityCorrection``). Merlin Models' contrastive output divides the corrected
logits by the temperature, i.e. ``(s − log Q)/τ``, which scales the correction by 1/τ and
over-corrects for τ < 1; we do not follow it. ``tests/losses/test_logits.py`` pins the order.
"""

from __future__ import annotations

from tfsoft.backend import tf

#: Logit given to masked entries: finite (no NaN in gradients), exp() underflows to 0.
MASKED_LOGIT = -1e9
SIMILARITIES = ("dot", "cosine")


def normalize(embeddings: tf.Tensor) -> tf.Tensor:
    """Unit L2 norm along the last axis (cosine similarity = dot product of normalised vectors)."""
    return tf.math.l2_normalize(embeddings, axis=-1, epsilon=1e-12)


def prepare_embeddings(embeddings: tf.Tensor, similarity: str) -> tf.Tensor:
    """Embeddings ready for a dot product under ``similarity`` (``"dot"`` or ``"cosine"``)."""
    if similarity == "cosine":
        return normalize(embeddings)
    if similarity == "dot":
        return embeddings
    raise ValueError(f"similarity must be one of {SIMILARITIES}; got {similarity!r}")


def scale(logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """``logits / τ``. With cosine similarity τ in [0.1, 0.2] works best (SSM paper §3.1.2)."""
    if isinstance(temperature, (int, float)):
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


def mask_duplicate_positives(
    logits: tf.Tensor, candidate_ids: tf.Tensor, positive_index: tf.Tensor
) -> tf.Tensor:
    """In-batch: mask columns holding the same item as the row's positive (but not the positive).

    When two examples of a batch share a positive item, each would otherwise be pushed away
    from its own positive through the other column.

    Args:
        logits: [B, M] logits against M candidates.
        candidate_ids: [M] item id of each candidate column.
        positive_index: [B] column of each row's positive.
    """
    positive_ids = tf.gather(candidate_ids, positive_index)
    same_item = tf.equal(positive_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :])
    own_column = tf.equal(
        positive_index[:, tf.newaxis], tf.range(tf.shape(candidate_ids, out_type=positive_index.dtype)[0])[tf.newaxis, :]
    )
    return tf.where(same_item & ~own_column, tf.cast(MASKED_LOGIT, logits.dtype), logits)


def mask_columns(logits: tf.Tensor, column_mask: tf.Tensor) -> tf.Tensor:
    """Mask whole columns (e.g. the padding/OOV row of the catalog in full softmax).

    Args:
        logits: [B, M]; column_mask: [M] bool, True = keep.
    """
    return tf.where(column_mask[tf.newaxis, :], logits, tf.cast(MASKED_LOGIT, logits.dtype))
