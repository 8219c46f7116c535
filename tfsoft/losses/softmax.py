"""The softmax family: full softmax, sampled softmax with logQ correction, in-batch SSM.

All functions take embeddings (already normalised for cosine similarity, see
:func:`tfsoft.losses.logits.prepare_embeddings`). ``*_logits`` return the objective's
:class:`CandidateLogits` (what a soft-target term reuses); ``*_loss`` return the
**per-example** cross-entropy [B] over them; weighting and averaging happen in
:func:`tfsoft.losses.reduction.weighted_mean`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.losses import logits as steps


@dataclass(frozen=True)
class CandidateLogits:
    """A softmax objective's logits over its candidate set C, with what a second term over the
    same candidates (a soft target, :mod:`tfsoft.losses.soft_targets`) needs to apply the same
    corrections and masks.

    Attributes:
        logits: [B, M] ``s/τ − log E[count_j]``; masked columns (padding, duplicates,
            accidental hits) carry :data:`~tfsoft.losses.logits.MASKED_LOGIT`.
        positive_index: [B] int32 column of each row's positive.
        candidate_ids: [M] (shared columns) or [B, M] item id of each column.
        log_expected_count: the logQ correction included in ``logits``, broadcastable to
            [B, M]; None = none (full softmax, or correction off).
        labels: optional [B, M] one-hot of ``positive_index``; when set, the cross-entropy uses
            the fused dense-label kernel (in-batch: about twice as fast on CPU).
        query, columns: optional factors of the kept logits, ``logits = query @ columnsᵀ`` on
            every kept column ([B, d] already divided by τ, [M, d]); set where the logits are
            that product (full softmax), so a row-shared soft target d needs only
            ``query @ (columnsᵀ d)``, O((B + M)·d), never a [B, M] pass.
        column_keep: optional [M] bool, the mask when it is the same for every row (full
            softmax's valid items); None = per-row masks (read them with :meth:`keep`).
    """

    logits: tf.Tensor
    positive_index: tf.Tensor
    candidate_ids: tf.Tensor
    log_expected_count: tf.Tensor | None = None
    labels: tf.Tensor | None = None
    query: tf.Tensor | None = None
    columns: tf.Tensor | None = None
    column_keep: tf.Tensor | None = None

    def keep(self) -> tf.Tensor:
        """[B, M] bool: False on masked columns (their logit is ``MASKED_LOGIT`` or below)."""
        return self.logits > tf.cast(steps.MASKED_LOGIT / 2, self.logits.dtype)

    def scores(self) -> tf.Tensor:
        """[B, M] ``s/τ`` before the logQ correction (meaningless on masked columns)."""
        if self.log_expected_count is None:
            return self.logits
        return self.logits + tf.cast(self.log_expected_count, self.logits.dtype)

    def cross_entropy(self) -> tf.Tensor:
        """[B] ``−log softmax(logits)[positive]``."""
        if self.labels is not None:
            return tf.nn.softmax_cross_entropy_with_logits(labels=self.labels, logits=self.logits)
        return softmax_cross_entropy(self.logits, self.positive_index)


def softmax_cross_entropy(
    logits: tf.Tensor, positive_index: tf.Tensor, logsumexp_weight=None, positive_weight=None
) -> tf.Tensor:
    """``−log softmax(logits)[positive]`` per row: ``logsumexp_j(l_j) − l_pos``; more generally
    ``w·logsumexp_j(l_j) − b·l_pos`` (the hard part of a mixed-label cross-entropy,
    :func:`tfsoft.losses.soft_targets.mixed_target_cross_entropy`).

    Gradient ``w·softmax(l) − b·onehot(pos)``, written by hand (``tf.custom_gradient``) from
    the one fused ``softmax`` of the forward: the logsumexp is ``max_j l_j − log max_j p_j``
    (the largest probability is ≥ 1/M, so its log never underflows), and the backward is one
    scaled copy of p with b subtracted at the positives. TensorFlow's own graph for
    ``reduce_logsumexp`` and the gather's gradient spend four more passes over [B, M] (its
    fused ``sparse_softmax_cross_entropy_with_logits`` is slower still on a CPU); the loss
    part of a full-softmax step over 1,950 queries × 3,648 items, one thread, falls from
    about 21 to 13 ms (``bench/bench_soft_target_overhead.py`` measures the whole step).
    16-bit logits are reduced in float32.

    Args:
        logits: [B, M] (masked columns finite and very negative, or −inf, never a whole row);
            positive_index: [B] int column of each row's positive.
        logsumexp_weight, positive_weight: w and b, constants (no gradient flows into them),
            scalars or [B]; None = 1.
    Returns:
        [B] the loss, in the logits' dtype.
    """
    dtype = logits.dtype
    if dtype in (tf.float16, tf.bfloat16):
        logits = tf.cast(logits, tf.float32)
    index = tf.cast(positive_index, tf.int32)
    w = None if logsumexp_weight is None else tf.stop_gradient(tf.cast(logsumexp_weight, logits.dtype))
    b = None if positive_weight is None else tf.stop_gradient(tf.cast(positive_weight, logits.dtype))

    @tf.custom_gradient
    def cross_entropy(z):
        probabilities = tf.nn.softmax(z, axis=-1)
        logsumexp = tf.reduce_max(z, axis=-1) - tf.math.log(tf.reduce_max(probabilities, axis=-1))
        positive = steps.at_positive(z, index)
        value = (logsumexp if w is None else w * logsumexp) - (positive if b is None else b * positive)

        def gradient(upstream):
            scale = upstream if w is None else upstream * w
            at_positives = upstream if b is None else upstream * b
            rows = tf.range(tf.shape(index)[0])
            return tf.tensor_scatter_nd_sub(probabilities * scale[:, tf.newaxis], tf.stack([rows, index], axis=1),
                                            at_positives)

        return value, gradient

    return tf.cast(cross_entropy(logits), dtype)


def full_softmax_loss(query: tf.Tensor, catalog: tf.Tensor, positive_ids: tf.Tensor, **kwargs) -> tf.Tensor:
    """[B] cross-entropy of :func:`full_softmax_logits` (same arguments)."""
    return full_softmax_logits(query, catalog, positive_ids, **kwargs).cross_entropy()


def full_softmax_logits(
    query: tf.Tensor,
    catalog: tf.Tensor,
    positive_ids: tf.Tensor,
    *,
    temperature: float = 1.0,
    valid_items: tf.Tensor | None = None,
) -> CandidateLogits:
    """Softmax cross-entropy over the whole catalog (SSM paper §2, Eq. 2; "SM").

    ``ℓ(u, i) = −s(u,i)/τ + log Σ_{j∈I} exp(s(u,j)/τ)``. Exact, O(B·|I|·d): the reference the
    sampled losses approximate; practical for catalogs up to ~10^5 items.

    Args:
        query: [B, d]; catalog: [V, d] embeddings of every item index; positive_ids: [B].
        temperature: τ.
        valid_items: optional [V] bool; False columns (e.g. index 0, the OOV row) are masked.
    """
    scaled_query = steps.scale(query, temperature)  # (q/τ)·c: scales [B, d], not [B, V]
    logits = tf.matmul(scaled_query, catalog, transpose_b=True)
    if valid_items is not None:
        logits = steps.mask_columns(logits, valid_items)
    keep = tf.ones([tf.shape(catalog)[0]], tf.bool) if valid_items is None else tf.cast(valid_items, tf.bool)
    return CandidateLogits(logits, tf.cast(positive_ids, tf.int32), tf.range(tf.shape(catalog)[0]),
                           query=scaled_query, columns=catalog, column_keep=keep)


def sampled_softmax_loss(query, positive, positive_ids, negatives, negative_ids, **kwargs) -> tf.Tensor:
    """[B] cross-entropy of :func:`sampled_softmax_logits` (same arguments)."""
    return sampled_softmax_logits(query, positive, positive_ids, negatives, negative_ids, **kwargs).cross_entropy()


def sampled_softmax_logits(
    query: tf.Tensor,
    positive: tf.Tensor,
    positive_ids: tf.Tensor,
    negatives: tf.Tensor,
    negative_ids: tf.Tensor,
    *,
    temperature: float = 1.0,
    positive_log_expected_count: tf.Tensor | None = None,
    negative_log_expected_count: tf.Tensor | None = None,
    remove_accidental_hits: bool = True,
) -> CandidateLogits:
    """Sampled softmax with logQ correction (Bengio & Senecal 2008; Jean et al. 2015;
    Yi et al. RecSys 2019 §3; SSM paper §4.4.2 for unigram^β proposals).

    Logits over the positive and N sampled negatives, positive in column 0::

        l_0 = s(q, c⁺)/τ [− log(N·Q(c⁺)) if positive_log_expected_count is given],
        l_k = s(q, n_k)/τ − log(N·Q(n_k)),   negatives equal to c⁺ masked,
        ℓ = −log softmax(l)_0

    Without correcting the positive, ``e^{l_0} + Σ_k e^{l_k}`` is an unbiased estimate of the
    full partition function (importance sampling of the items other than c⁺), so ℓ and ∇ℓ
    converge to full softmax as N grows; without the negatives' correction the model learns
    ``s − log Q`` instead of ``s`` (``tests/losses/test_sampled_convergence.py`` checks both).

    Args:
        query: [B, d]; positive: [B, d]; positive_ids: [B].
        negatives: [N, d] shared by the batch, or [B, N, d] per example.
        negative_ids: [N] or [B, N].
        temperature: τ.
        positive_log_expected_count: [B] ``log(N·Q(c⁺))``; None = no correction.
        negative_log_expected_count: [N] or [B, N]; None = no correction.
        remove_accidental_hits: mask negatives equal to the example's positive.
    Returns:
        The :class:`CandidateLogits` (``.cross_entropy()`` is the [B] loss).
    """
    positive_logits = steps.scale(tf.reduce_sum(query * positive, axis=-1), temperature)
    if negatives.shape.rank == 2:
        negative_logits = tf.matmul(query, negatives, transpose_b=True)
    else:
        negative_logits = tf.einsum("bd,bnd->bn", query, negatives)
    negative_logits = steps.scale(negative_logits, temperature)
    if positive_log_expected_count is not None:
        positive_logits = positive_logits - tf.cast(positive_log_expected_count, positive_logits.dtype)
    if negative_log_expected_count is not None:
        negative_logits = steps.subtract_log_expected_count(negative_logits, negative_log_expected_count)
    if remove_accidental_hits:
        negative_logits = steps.mask_accidental_hits(negative_logits, positive_ids, negative_ids)
    logits = tf.concat([positive_logits[:, tf.newaxis], negative_logits], axis=1)
    batch = tf.shape(logits)[0]
    num_negatives = tf.shape(negative_logits)[1]
    candidate_ids = tf.concat([tf.cast(positive_ids, tf.int64)[:, tf.newaxis],
                               tf.broadcast_to(tf.cast(negative_ids, tf.int64), [batch, num_negatives])], axis=1)
    log_count = None
    if positive_log_expected_count is not None or negative_log_expected_count is not None:
        zeros = tf.zeros([batch], logits.dtype)
        positive_count = zeros if positive_log_expected_count is None else tf.cast(positive_log_expected_count, logits.dtype)
        negative_count = (tf.zeros([batch, num_negatives], logits.dtype) if negative_log_expected_count is None else
                          tf.broadcast_to(tf.cast(negative_log_expected_count, logits.dtype), [batch, num_negatives]))
        log_count = tf.concat([positive_count[:, tf.newaxis], negative_count], axis=1)
    return CandidateLogits(logits, tf.zeros([batch], tf.int32), candidate_ids, log_count)


def in_batch_softmax_loss(query, candidates, candidate_ids, **kwargs) -> tf.Tensor:
    """[B] cross-entropy of :func:`in_batch_softmax_logits` (same arguments)."""
    return in_batch_softmax_logits(query, candidates, candidate_ids, **kwargs).cross_entropy()


def in_batch_softmax_logits(
    query: tf.Tensor,
    candidates: tf.Tensor,
    candidate_ids: tf.Tensor,
    *,
    positive_index: tf.Tensor | None = None,
    positive_offset=0,
    temperature: float = 1.0,
    candidate_log_expected_count: tf.Tensor | None = None,
    remove_duplicates: bool = True,
) -> CandidateLogits:
    """In-batch sampled softmax, "SSM" (SSM paper §2, Eq. 3; Yi et al. RecSys 2019 Eq. 3).

    The positives of the batch (possibly gathered from all replicas, possibly followed by
    extra sampled items: *mixed negative sampling*, Yang et al. WWW'20) are every row's
    candidates::

        l_ij = s(q_i, c_j)/τ − log E[count of c_j],   ℓ_i = −log softmax(l_i)_{pos(i)}

    In-batch candidates are drawn in proportion to item frequency, so with logQ correction
    the expected count of item j among B positives is ``B·p_j``; for mixed negatives use the
    expected count in the union, ``B·p_j + N·Q(j)``, for every column holding item j.

    Computed as ``(q_i/τ)·c_j`` (the [B, d] query is scaled, not the [B, M] logits), duplicate
    columns get :data:`~tfsoft.losses.logits.MASKED_LOGIT` added (their softmax weight is
    exactly 0), and ``ℓ_i`` comes from the fused dense softmax cross-entropy with one-hot
    labels, which on CPU is about twice as fast as the sparse-label kernel at B = M = 256.

    Args:
        query: [B, d].
        candidates: [M, d], M >= B (batch positives first by default, then extra negatives).
        candidate_ids: [M] item ids of the candidates.
        positive_index: [B] column of each row's positive; default ``range(B) + positive_offset``.
        positive_offset: int or scalar int32 tensor: with ``positive_index`` None, row i's
            positive is column ``i + positive_offset`` (this replica's rows among gathered ones).
        temperature: τ (SSM paper: 0.1–0.2 with cosine similarity).
        candidate_log_expected_count: [M] log expected counts; None = no logQ correction.
        remove_duplicates: mask other columns holding the row's own positive item.
    Returns:
        The :class:`CandidateLogits` (``.cross_entropy()`` is the [B] loss).
    """
    batch, num_candidates = tf.shape(query)[0], tf.shape(candidates)[0]
    # s(q, c)/τ = (q/τ)·c: scale the [B, d] query rather than the [B, M] logits.
    logits = tf.matmul(steps.scale(query, temperature), candidates, transpose_b=True)
    if candidate_log_expected_count is not None:
        logits = steps.subtract_log_expected_count(logits, candidate_log_expected_count[tf.newaxis, :])
    if positive_index is None:
        labels = steps.diagonal_labels(batch, num_candidates, positive_offset, logits.dtype)
        positive_index = tf.range(batch) + tf.cast(positive_offset, tf.int32)
        if remove_duplicates:
            logits = steps.mask_duplicate_positives(logits, candidate_ids, positive_offset=positive_offset)
    else:
        positive_index = tf.cast(positive_index, tf.int32)
        own_column = steps.positive_columns(positive_index, num_candidates)
        labels = tf.cast(own_column, logits.dtype)
        if remove_duplicates:
            logits = steps.mask_duplicate_positives(logits, candidate_ids, positive_index, own_column=own_column)
    log_count = None
    if candidate_log_expected_count is not None:
        log_count = tf.cast(candidate_log_expected_count, logits.dtype)[tf.newaxis, :]
    # −log softmax(l_i)_{pos(i)} from the dense labels, as softmax_cross_entropy with sparse ones.
    return CandidateLogits(logits, positive_index, candidate_ids, log_count, labels=labels)
