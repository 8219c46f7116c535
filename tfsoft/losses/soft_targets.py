"""Soft targets for softmax objectives: SoftRec (Cheng et al., SIGIR'21), CSRec (Wu et al.,
TOIS) and DeSoRec (Zhang et al., decoupled soft targets).

The student's logits are given over a candidate set C (the full catalog, sampled {y} ∪ S, or
in-batch positives ∪ mixed negatives). A soft target d over the catalog is used on C through
its self-normalised restriction (:func:`restricted_target`), with the same per-candidate logQ
correction as the student, so that the soft term's gradient and KL value converge to their
full-catalog values as C grows (``tests/losses/test_soft_targets.py`` checks it).

Every loss returns the per-example loss [B]. Targets are constants: gradients never flow into
them (``tf.stop_gradient``). Masks are bool with True = keep, [B, C] or [C].
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses import logits as steps
from tfsoft.losses.softmax import softmax_cross_entropy

POPULARITY_SCALINGS = ("log", "csrec")
#: Floor of the binary log-probabilities of :func:`decoupled_soft_target_loss` (exp ≈ 4e-44).
LOG_PROBABILITY_FLOOR = -100.0


class SparseWeights(NamedTuple):
    """W restricted to k neighbours per node: ``W[i, indices[i, k]] = weights[i, k]``."""

    indices: tf.Tensor  # [n, k] int
    weights: tf.Tensor  # [n, k]


class SparseTargets(NamedTuple):
    """Per-row targets stored as m (item, probability) pairs."""

    item_ids: tf.Tensor  # [n, m] int
    probs: tf.Tensor  # [n, m]


def _check_range(value, name: str, low: float, high: float, low_open: bool = False) -> None:
    """ConfigError naming ``name`` unless low ≤ value ≤ high (low < value if ``low_open``); tensors pass."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number; got {value!r}")
    if value > high or value < low or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ConfigError(f"{name} must be in {interval}; got {value!r}")


def _check_positive(value, name: str) -> None:
    _check_range(value, name, 0.0, float("inf"), low_open=True)


def _check_count(value, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}; got {value!r}")


def _masked_log_softmax(logits: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    """log softmax over the unmasked entries; masked entries get ≈ MASKED_LOGIT (finite)."""
    if mask is not None:
        logits = steps.add_mask(logits, tf.logical_not(mask))
    return tf.nn.log_softmax(logits, axis=-1)


def _as(value, dtype: tf.DType) -> tf.Tensor:
    """``value`` as a ``dtype`` tensor; Python numbers exactly (tf.cast would round them via float32)."""
    if isinstance(value, numbers.Real):
        return tf.constant(value, dtype=dtype)
    return tf.cast(value, dtype)


def _onehot(positive_index: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    return tf.one_hot(tf.cast(positive_index, tf.int32), tf.shape(like)[-1], dtype=like.dtype)


def restricted_target(
    target_logits: tf.Tensor, log_expected_count: tf.Tensor | None = None, mask: tf.Tensor | None = None,
    *, finite: bool = False,
) -> tf.Tensor:
    """The soft target restricted to the candidate set: ``d_j ∝ exp(t_j − log E[count_j])``.

    ``t`` are softened target logits over C (teacher logit / T, or log of an explicit
    distribution; −inf allowed). With the student's own logQ correction ``log(n·Q_j)`` this is
    the self-normalised importance-sampling estimate of the full-catalog target
    ``softmax(t)`` over C (SSM paper §2; Bengio & Senecal 2008), so ``Σ_C d_j f_j`` estimates
    ``E_{j∼d}[f_j]`` consistently. Without a correction (full catalog) it is ``softmax(t)``.

    Two ways to compute it, the same result (``tests/losses/test_soft_targets.py``):

    * **row-shared** logits and correction (``[C]`` or ``[1, C]``: label smoothing, popularity)
      under a per-row mask: ``exp(t_j − log E[count_j] − shift)`` once per column with the shift
      the largest finite value over all columns, then per row only the mask and the normaliser
      (three passes over ``[B, C]``). A row whose kept values all lie so far below the shift that
      their sum falls under ``sqrt(smallest normal)`` (about 1e-19 in float32) is recomputed with
      its own shift, so no row underflows to zeros;
    * otherwise one masked ``softmax`` (masked entries −inf: a ``[C]`` mask as a broadcast −inf
      offset, a ``[B, C]`` one by a select) with all-masked rows set to zeros.

    Args:
        target_logits: [B, C] or [C]; log_expected_count: [B, C], [1, C] or [C], None = no correction.
        mask: [B, C] or [C] bool, True = keep.
        finite: the caller guarantees finite logits and at least one kept column per row (a
            teacher's scores over a softmax objective's candidates, whose positive column is
            never masked): no row can be empty, so the test for empty rows (a read of [B, C])
            is skipped and every row sums to 1.
    Returns:
        The broadcast shape of the inputs ([B, C] when any is): non-negative rows summing to 1,
        masked entries exactly 0. A row whose every candidate is masked (or has logit −inf) is
        all zeros, not NaN: its soft term is then 0.
    """
    logits = tf.stop_gradient(target_logits)
    if log_expected_count is not None:
        logits = logits - tf.cast(log_expected_count, logits.dtype)
    if mask is not None and _row_shared(logits) and mask.shape.rank == 2:
        return _restricted_shared(tf.reshape(logits, [-1]), tf.cast(mask, tf.bool))
    return _masked_softmax(logits, None if mask is None else tf.cast(mask, tf.bool), finite=finite)


def _row_shared(values: tf.Tensor) -> bool:
    """Statically one row for every example: shape [C] or [1, C]."""
    return values.shape.rank == 1 or (values.shape.rank == 2 and values.shape[0] == 1)


def _masked_softmax(logits: tf.Tensor, keep: tf.Tensor | None, finite: bool = False) -> tf.Tensor:
    """``softmax`` over the kept entries (masked: exactly 0); rows with nothing finite kept: zeros.

    Such rows are found from the row maxima (−inf) before the softmax, and only when one
    exists is a select pass spent on them: one read of [B, C] instead of a NaN test and a
    select over every entry. With ``finite`` (see :func:`restricted_target`) there are none
    and the test is skipped. A ``[C]`` mask over [B, C] logits is a broadcast −inf offset
    (cheaper on a CPU than a broadcast select)."""
    neg_inf = tf.constant(float("-inf"), logits.dtype)
    if keep is not None and keep.shape.rank == 1 and logits.shape.rank == 2:
        logits = logits + tf.where(keep, tf.zeros([], logits.dtype), neg_inf)[tf.newaxis, :]
    elif keep is not None:
        logits = tf.where(keep, logits, neg_inf)
    probabilities = tf.nn.softmax(logits, axis=-1)  # an all −inf row is NaN
    if finite:
        return probabilities
    empty = tf.math.is_inf(tf.reduce_max(logits, axis=-1, keepdims=True))  # −inf: nothing finite kept
    return tf.cond(tf.reduce_any(empty), lambda: tf.where(empty, tf.zeros_like(probabilities), probabilities),
                   lambda: probabilities)


def _restricted_shared(logits: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """:func:`restricted_target` of [C] logits under a [B, C] mask (its docstring, first case)."""
    finite = tf.math.is_finite(logits)
    neg_inf = tf.constant(float("-inf"), logits.dtype)
    shift = tf.reduce_max(tf.where(finite, logits, neg_inf))
    shift = tf.where(tf.math.is_finite(shift), shift, tf.zeros_like(shift))
    column_weights = tf.where(finite, tf.exp(tf.where(finite, logits, shift) - shift), tf.zeros_like(logits))
    weights = column_weights[tf.newaxis, :] * tf.cast(keep, logits.dtype)  # [B, C], 0 where masked
    totals = tf.reduce_sum(weights, axis=-1, keepdims=True)
    floor = tf.constant(float(np.sqrt(np.finfo(logits.dtype.as_numpy_dtype).tiny)), logits.dtype)
    shared = tf.math.divide_no_nan(weights, totals)
    return tf.cond(tf.reduce_any(totals < floor),  # a row that underflowed (or keeps nothing): exact path
                   lambda: tf.where(totals < floor, _masked_softmax(logits[tf.newaxis, :], keep), shared),
                   lambda: shared)


def mix_with_onehot(distribution: tf.Tensor, positive_index: tf.Tensor, weight: float = 0.5) -> tf.Tensor:
    """``weight·onehot(y) + (1 − weight)·d`` (SoftRec Definition 1, Eq. 6, 8, 10; CSRec Eq. 14).

    SoftRec's ``½(d + onehot)`` is ``weight = 0.5``; label smoothing with ε is ``weight = 1 − ε``
    on :func:`uniform_target_logits`. For ``weight ≥ 0.5`` the argmax is y (Definition 1's
    constraint; a tie is possible only at 0.5 when d is one-hot on another item).

    Args:
        distribution: [B, C] rows summing to 1; positive_index: [B]; weight: in [0, 1].
    """
    _check_range(weight, "weight", 0.0, 1.0)
    distribution = tf.stop_gradient(distribution)
    weight = _as(weight, distribution.dtype)
    return weight * _onehot(positive_index, distribution) + (1 - weight) * distribution


def uniform_target_logits(num_candidates, dtype=tf.float32) -> tf.Tensor:
    """[C] zeros: the uniform target of label smoothing (LS). Through :func:`restricted_target`
    with a logQ correction it becomes the self-normalised estimate of the catalog-uniform target."""
    return tf.zeros([num_candidates], dtype=dtype)


def popularity_target_logits(counts: tf.Tensor, temperature: float = 1.0, scaling: str = "log") -> tf.Tensor:
    """Target logits from item popularity (SoftRec §3.2.1 "POP+", Eq. 6: ``softmax(pop/T)``).

    ``scaling``:
        * ``"log"``: ``log(1 + count) / T`` (softmax ∝ (1 + count)^{1/T}; raw counts would give
          an almost one-hot softmax on real catalogs);
        * ``"csrec"``: ``5·(2·count/(max + min) − 1) / T``, the popularity scaling of CSRec's
          implementation of the SoftRec baseline: values in about [−5, 5], invariant to
          normalising the counts; max and min are over every entry of ``counts``.

    Args:
        counts: [V] interaction counts per item, from the **training split only** (counts from
            validation or test interactions would leak the held-out positives into the target).
        temperature: T > 0. scaling: one of :data:`POPULARITY_SCALINGS`.
    Returns:
        [V] logits; gather them at the candidate ids and pass to :func:`restricted_target`.
    """
    _check_positive(temperature, "temperature")
    if scaling not in POPULARITY_SCALINGS:
        raise ConfigError(f"scaling must be one of {POPULARITY_SCALINGS}; got {scaling!r}")
    counts = tf.convert_to_tensor(counts)
    counts = counts if counts.dtype.is_floating else tf.cast(counts, tf.float32)
    if scaling == "log":
        logits = tf.math.log1p(counts)
    else:
        logits = 5.0 * (2.0 * counts / (tf.reduce_max(counts) + tf.reduce_min(counts)) - 1.0)
    return logits / _as(temperature, counts.dtype)


def sparse_target_logits(targets: SparseTargets, candidate_ids: tf.Tensor) -> tf.Tensor:
    """[n, C] log-probabilities of :class:`SparseTargets` at the candidate ids (−inf where absent):
    the ``target_logits`` of an explicit distribution for :func:`restricted_target`.

    Args:
        targets: ([n, m] item ids, [n, m] probabilities); candidate_ids: [C] or [n, C].
    """
    rows = tf.shape(targets.item_ids)[:1]
    candidate_ids = tf.broadcast_to(candidate_ids, tf.concat([rows, tf.shape(candidate_ids)[-1:]], 0))
    candidate_ids = tf.cast(candidate_ids, targets.item_ids.dtype)
    hits = tf.equal(targets.item_ids[:, :, tf.newaxis], candidate_ids[:, tf.newaxis, :])
    probs = tf.reduce_sum(tf.cast(hits, targets.probs.dtype) * targets.probs[:, :, tf.newaxis], axis=1)
    return tf.math.log(probs)


def mixed_target_cross_entropy(
    logits: tf.Tensor, positive_index: tf.Tensor, target: tf.Tensor, target_weight: float, positive_weight: float,
    query: tf.Tensor | None = None, columns: tf.Tensor | None = None, target_sums_to_one: bool = False,
) -> tf.Tensor:
    """``H(a·d + b·onehot_y, softmax(z))`` per row, without forming the mixed label ([B]).

    With L = a·d + b·onehot_y, ``−Σ_j L_j log p_j = (Σ_j L_j)·logsumexp(z) − Σ_j L_j z_j``,
    so the loss is ``(b + a·Σ_j d_j)·logsumexp(z) − b·z_y − a·Σ_j d_j z_j``: one logsumexp, one
    product with d and a gather, where the fused ``softmax_cross_entropy_with_logits`` would
    need the [B, C] label written first (a scaled copy of d and a scatter at y). Gradient
    ``(Σ_j L_j)·p − L``, the same. This is SoftRec's objective (Eq. 4) with a = α(1 − w),
    b = 1 − α + αw for a target ``w·onehot + (1 − w)·d``.

    A **row-shared** target ([C]: label smoothing, popularity) over logits that factor as
    ``z = Q·Kᵀ`` on the kept columns (full softmax: ``query`` = q/τ [B, d], ``columns`` [C, d])
    needs no [B, C] pass at all for its term: ``Σ_j d_j z_ij = Q_i · (Kᵀ d)``, O((B + C)·d)
    (masked columns have d_j = 0, so their mask offset never enters). Its gradient is the
    same as the [B, C] form's, through Q and K.

    Args:
        logits: [B, C] the student's (corrected, masked: masked columns finite and very
            negative, where d is 0); positive_index: [B] column of y; target: [B, C] d, rows
            summing to 1 (or all 0), or [C] one row for every example; target_weight: a;
            positive_weight: b; query, columns: the factors above (only with a [C] target).
        target_sums_to_one: the caller guarantees that every row of d sums to 1 (no empty row,
            :func:`restricted_target` with ``finite``): ``Σ_j d_j`` is then not read from [B, C].
    """
    target = tf.stop_gradient(tf.cast(target, logits.dtype))
    a, b = _as(target_weight, logits.dtype), _as(positive_weight, logits.dtype)
    mass = b + a if target_sums_to_one else b + a * tf.reduce_sum(target, axis=-1)
    if target.shape.rank == 1 and query is not None:
        expected_logit = tf.linalg.matvec(query, tf.linalg.matvec(tf.cast(columns, logits.dtype), target,
                                                                  transpose_a=True))
    else:
        expected_logit = tf.reduce_sum(target * logits, axis=-1)
    return softmax_cross_entropy(logits, positive_index, mass, b) - a * expected_logit


def soft_cross_entropy(
    student_logits: tf.Tensor, target: tf.Tensor, student_mask: tf.Tensor | None = None
) -> tf.Tensor:
    """``H(d, p) = −Σ_j d_j log p_j`` with p the masked softmax of the logits; [B]. Gradient ``p − d``."""
    log_p = _masked_log_softmax(student_logits, student_mask)
    return -tf.reduce_sum(tf.stop_gradient(tf.cast(target, log_p.dtype)) * log_p, axis=-1)


def soft_target_kl(
    student_logits: tf.Tensor, target: tf.Tensor, student_mask: tf.Tensor | None = None
) -> tf.Tensor:
    """``KL(d ‖ p) = Σ_j d_j (log d_j − log p_j)`` per example (0·log 0 = 0), for reporting.

    With d from :func:`restricted_target` and the student's logits corrected the same way, the
    log E[count] terms cancel, so this value (unlike ``H(d_C, p_C)``, which is off by the
    student-independent ``Σ d_j log E[count_j]``) estimates the full-catalog KL. For a
    temperature-scaled soft term pass ``s/T − log E[count]``.
    """
    target = tf.stop_gradient(tf.cast(target, student_logits.dtype))
    entropy = -tf.reduce_sum(tf.math.xlogy(target, target), axis=-1)
    return soft_cross_entropy(student_logits, target, student_mask) - entropy


def soft_target_loss(
    student_logits: tf.Tensor,
    positive_index: tf.Tensor,
    target: tf.Tensor,
    alpha: float,
    student_mask: tf.Tensor | None = None,
    student_temperature: float | None = None,
    base_temperature: float | None = None,
    student_log_expected_count: tf.Tensor | None = None,
) -> tf.Tensor:
    """SoftRec's objective (§3.1, Eq. 4–5, 7, 9, 11): ``(1 − α)·CE(onehot_y, p) + α·r²·H(d, p_T)``.

    ``H(d, p) = −Σ d log p = KL(d ‖ p) + H(d)``: the same value up to a constant and the same
    gradient ``p − d`` as ``KL(target ‖ model)``, the direction of SoftRec Eq. 5 and DeSoRec §A
    (CSRec Eq. 15 prints ``KL(P_f ‖ r_u)``, model first; we follow target ‖ model).
    With α = 1 and d = p (a frozen copy of the student), the soft term is the student's entropy.
    It equals cross-entropy with the mixed target ``(1 − α)·onehot + α·d`` (Eq. 4).

    Temperatures (Hinton et al. 2015, §2): ``student_logits`` are scores at the base
    temperature τ, ``s/τ``, before logQ correction. The hard term uses ``s/τ − log E[count]``;
    with ``student_temperature`` T the soft term uses ``s/T − log E[count] = (s/τ)·τ/T − …``
    (correction after temperature, as in :mod:`tfsoft.losses.logits`) and is multiplied by
    ``r² = (T/τ)²``, which keeps its gradient magnitude independent of T. τ defaults to 1
    (logits are raw scores: factor T², Hinton's setting). The target must be softened by the
    caller at the same T (:func:`restricted_target` of teacher logits / T). With T set, pass the
    logQ correction here rather than pre-subtracting it, or it would be rescaled by τ/T too.
    :func:`soft_target_kl` gives the KL value of the soft term for reporting.

    Args:
        student_logits: [B, C]; positive_index: [B] column of y; target: [B, C] d over C (0 on
            masked columns, e.g. from :func:`restricted_target` or :func:`mix_with_onehot`).
        alpha: α in [0, 1]; student_mask: [B, C] or [C] bool, True = keep.
        student_temperature: T > 0 or None (soft term on the same logits, r = 1).
        base_temperature: τ > 0 of ``student_logits``; None = 1.
        student_log_expected_count: [B, C] or [C] logQ correction, None = none (full softmax).
    Returns:
        [B] losses.
    """
    _check_range(alpha, "alpha", 0.0, 1.0)
    logits = student_logits
    if student_log_expected_count is not None:
        logits = steps.subtract_log_expected_count(logits, student_log_expected_count)
    log_p = _masked_log_softmax(logits, student_mask)
    hard = -steps.at_positive(log_p, positive_index)
    soft_logits, factor = logits, 1.0
    if student_temperature is not None:
        _check_positive(student_temperature, "student_temperature")
        base = 1.0 if base_temperature is None else base_temperature
        _check_positive(base, "base_temperature")
        ratio = _as(student_temperature, logits.dtype) / _as(base, logits.dtype)
        soft_logits = student_logits / ratio
        if student_log_expected_count is not None:
            soft_logits = steps.subtract_log_expected_count(soft_logits, student_log_expected_count)
        factor = ratio * ratio
    soft = factor * soft_cross_entropy(soft_logits, target, student_mask)
    alpha = _as(alpha, logits.dtype)
    return (1 - alpha) * hard + alpha * soft


def decoupled_soft_target_loss(
    student_logits: tf.Tensor,
    positive_index: tf.Tensor,
    target: tf.Tensor,
    lambda1: float = 0.3,
    lambda2: float = 0.7,
    student_mask: tf.Tensor | None = None,
) -> tf.Tensor:
    """DeSoRec's decoupled objective (§A): ``λ2·BCE(q_b, p_b) + (1 − λ2)·KL(q̂ ‖ p̂)``, no CE term.

    The coupled objective ``λ1·KL(q ‖ p) + (1 − λ1)·H(onehot_y, p)`` splits as
    ``KL(q_b ‖ p_b) + λ1(1 − q_y)·KL(q̂ ‖ p̂) + const`` with ``p_b = p_y``,
    ``q_b = λ1·q_y + 1 − λ1`` (binary, target vs the rest) and ``p̂, q̂`` the non-target parts
    renormalised; DeSoRec re-weights the two parts with λ2. BCE = KL(q_b ‖ p_b) + H(q_b), so
    this loss differs from the paper's KL form by a model-independent constant. With
    ``λ2 = 1/(1 + λ1(1 − q_y))`` its gradient is λ2 times the coupled gradient.

    Computed from log-softmaxes: ``log p_b = z_y − lse(z)``, ``log(1 − p_b) = lse_{j≠y}(z) − lse(z)``
    (both floored at :data:`LOG_PROBABILITY_FLOOR`), ``log p̂_j = z_j − lse_{j≠y}(z)``. If q has
    no non-target mass (q̂ undefined) the KL term is 0.

    Args:
        student_logits: [B, C] (logQ-corrected if C is sampled); positive_index: [B].
        target: [B, C] soft target q over C (0 on masked columns), not mixed with the one-hot.
        lambda1, lambda2: in (0, 1]; student_mask: [B, C] or [C] bool, True = keep.
    Returns:
        [B] losses.
    """
    _check_range(lambda1, "lambda1", 0.0, 1.0, low_open=True)
    _check_range(lambda2, "lambda2", 0.0, 1.0, low_open=True)
    logits = student_logits
    if student_mask is not None:
        logits = steps.add_mask(logits, tf.logical_not(student_mask))
    target = tf.stop_gradient(tf.cast(target, logits.dtype))
    is_positive = _onehot(positive_index, logits)
    rest_logits = steps.add_mask(logits, tf.cast(is_positive, tf.bool))
    lse_all = tf.reduce_logsumexp(logits, axis=-1)
    lse_rest = tf.reduce_logsumexp(rest_logits, axis=-1)
    log_p_b = tf.maximum(tf.reduce_sum(logits * is_positive, axis=-1) - lse_all, LOG_PROBABILITY_FLOOR)
    log_not_p_b = tf.maximum(lse_rest - lse_all, LOG_PROBABILITY_FLOOR)
    lambda1, lambda2 = _as(lambda1, logits.dtype), _as(lambda2, logits.dtype)
    q_y = tf.reduce_sum(target * is_positive, axis=-1)
    q_b = lambda1 * q_y + 1 - lambda1
    binary = -(q_b * log_p_b + (1 - q_b) * log_not_p_b)
    q_rest = target * (1 - is_positive)
    q_hat = tf.math.divide_no_nan(q_rest, tf.reduce_sum(q_rest, axis=-1, keepdims=True))
    log_p_hat = rest_logits - lse_rest[:, tf.newaxis]
    rest = tf.reduce_sum(tf.math.xlogy(q_hat, q_hat) - q_hat * log_p_hat, axis=-1)
    return lambda2 * binary + (1 - lambda2) * rest


def propagation_weights(
    embeddings: tf.Tensor, beta: float, neighbours: tf.Tensor | None = None
) -> tf.Tensor | SparseWeights:
    """Row-stochastic W of DeSoRec's interest sharing (§B): ``W_ij = softmax_j(−‖e_i − e_j‖/β)``
    over i's neighbours, self excluded.

    The poster defines ``w_u`` as a similarity ``p(v|u)`` without a formula; we use the
    **Euclidean** (not squared) distance between base-model embeddings, scaled by β.

    Args:
        embeddings: [n, d] nodes (examples) embedded by a base model.
        beta: β > 0. neighbours: None = every other node of the group (dense [n, n] W); or
            [n, k] int node indices (entries equal to the row's own index get weight 0).
    Returns:
        [n, n] W, or :class:`SparseWeights` ([n, k] indices, [n, k] weights). A row with no
        neighbour but itself is all zeros.
    """
    _check_positive(beta, "beta")
    n = tf.shape(embeddings)[0]
    if neighbours is None:
        squared = tf.reduce_sum(embeddings * embeddings, axis=-1)
        inner = tf.matmul(embeddings, embeddings, transpose_b=True)
        distance_sq = squared[:, tf.newaxis] + squared[tf.newaxis, :] - 2 * inner
        others = tf.logical_not(tf.eye(n, dtype=tf.bool))
    else:
        neighbours = tf.cast(neighbours, tf.int32)
        difference = embeddings[:, tf.newaxis, :] - tf.gather(embeddings, neighbours)
        distance_sq = tf.reduce_sum(difference * difference, axis=-1)
        others = tf.not_equal(neighbours, tf.range(n)[:, tf.newaxis])
    distance = tf.sqrt(tf.maximum(distance_sq, 0))
    weights = restricted_target(-distance / _as(beta, distance.dtype), mask=others)
    return weights if neighbours is None else SparseWeights(neighbours, weights)


def _propagate(weights: tf.Tensor | SparseWeights, q: tf.Tensor) -> tf.Tensor:
    if isinstance(weights, tuple):
        indices, values = weights
        return tf.einsum("nk,nkm->nm", tf.cast(values, q.dtype), tf.gather(q, tf.cast(indices, tf.int32)))
    return tf.matmul(tf.cast(weights, q.dtype), q)


def label_propagation(
    weights: tf.Tensor | SparseWeights, initial: tf.Tensor, alpha: float = 0.5, iterations: int = 20
) -> tf.Tensor:
    """``q^{t+1} = α·W·q^t + (1 − α)·q⁰`` from ``q⁰`` = one-hot targets (DeSoRec §B, α = ½).

    Converges (W row-stochastic, α < 1) to ``(1 − α)(I − αW)^{-1} q⁰`` with error O(α^T);
    rows stay distributions (except rows whose W row is all zeros: they shrink to (1 − α)·q⁰).

    Args:
        weights: dense [n, n] W or :class:`SparseWeights` from :func:`propagation_weights`.
        initial: [n, num_items] dense q⁰ (rows sum to 1); keep the result sparse with
            :func:`top_targets`.
        alpha: in [0, 1]; iterations: T ≥ 0.
    Returns:
        [n, num_items] q^T.
    """
    _check_range(alpha, "alpha", 0.0, 1.0)
    _check_count(iterations, "iterations", 0)
    initial = tf.convert_to_tensor(initial)
    alpha = _as(alpha, initial.dtype)
    q = initial
    for _ in range(iterations):
        q = alpha * _propagate(weights, q) + (1 - alpha) * initial
    return q


def top_targets(q: tf.Tensor, m: int) -> SparseTargets:
    """Each row's m largest entries, renormalised to sum to 1 (an all-zero row stays zero).

    Args:
        q: [n, num_items]; m: 1 ≤ m ≤ num_items.
    Returns:
        :class:`SparseTargets` ([n, m] item ids, [n, m] probabilities), largest first.
    """
    _check_count(m, "m", 1)
    probs, item_ids = tf.math.top_k(q, k=m)
    return SparseTargets(item_ids, tf.math.divide_no_nan(probs, tf.reduce_sum(probs, axis=-1, keepdims=True)))
