"""Soft-target sources that need no teacher model: uniform (label smoothing) and item popularity.

Both give the same target logits to every row of the step (a function of the candidate item
alone), so they restrict them with :func:`restrict_shared`: the exponentials once per column,
only the mask and the normaliser per row (``bench/bench_soft_target_overhead.py`` measures
what the soft term costs per step).
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.losses.soft_target_objective import restrict
from tfsoft.losses.soft_targets import POPULARITY_SCALINGS, popularity_target_logits, uniform_target_logits


def restrict_shared(target_logits: tf.Tensor, scored) -> tf.Tensor:
    """:func:`~tfsoft.losses.soft_target_objective.restrict` for target logits shared by every
    row: ``[M]`` logits over shared columns, with a logQ correction of shape ``[M]`` or
    ``[1, M]`` (or none). ``exp(t_j − log E[count_j] − shift)`` is computed once per column; per
    row only the student's mask and the normaliser, three passes over ``[B, M]`` instead of about
    ten. Anything else (per-row logits or corrections) goes to ``restrict``.

    The shift is the largest finite corrected logit over all columns rather than over each row's
    kept columns: the same target, since the masks of the softmax objectives (padding/OOV
    columns, duplicates of the row's positive, accidental hits) never drop every copy of an
    item, so each row's kept maximum is the overall one, OOV's logit aside (−inf for popularity,
    the common value 0 for uniform). Rows with nothing kept are all zeros, as with ``restrict``.
    """
    log_count = scored.log_expected_count
    per_row_count = log_count is not None and (log_count.shape.rank is None or log_count.shape.rank > 2 or (
        log_count.shape.rank == 2 and log_count.shape[0] != 1))
    if target_logits.shape.rank != 1 or per_row_count:
        return restrict(target_logits, scored)
    logits = tf.stop_gradient(target_logits)
    if log_count is not None:
        logits = logits - tf.reshape(tf.cast(log_count, logits.dtype), [-1])
    finite = tf.math.is_finite(logits)
    shift = tf.reduce_max(tf.where(finite, logits, tf.fill(tf.shape(logits), tf.constant(float("-inf"), logits.dtype))))
    shift = tf.where(tf.math.is_finite(shift), shift, tf.zeros_like(shift))
    weights = tf.where(finite, tf.exp(tf.where(finite, logits, shift) - shift), tf.zeros_like(logits))  # [M]
    weights = weights[tf.newaxis, :] * tf.cast(scored.keep(), logits.dtype)  # [B, M], 0 where masked
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))


@dataclass(frozen=True)
class UniformTarget:
    """Label smoothing (LS; SoftRec §4.1 baseline): d uniform over the valid candidates, so
    the loss is ``(1 − α)·CE + α·H(uniform, p)``. Under a logQ-corrected base the restriction
    makes it the self-normalised estimate of the catalog-uniform target."""

    onehot_weight: float = 0.0

    def target(self, scored, context):
        logits = uniform_target_logits(tf.shape(scored.logits)[-1], scored.logits.dtype)
        if scored.candidate_ids.shape.rank == 2:  # per-example columns (sampled, not shared)
            return restrict(logits, scored)
        return restrict_shared(logits, scored)


@dataclass(frozen=True)
class PopularityTarget:
    """SoftRec's POP+ (§3.2, Eq. 6): ``d = ½(softmax(pop/T) + onehot_y)``, pop from the
    **training split's** item counts (CSRec's own baseline counts validation and test too; we
    do not). ``scaling``: ``log`` (log(1 + count), default) or ``csrec``
    (``5·(2·count/(max + min) − 1)``, min and max over the real items).

    Attributes:
        temperature: T, the target's softening.
        scaling: how raw counts become scores.
        onehot_weight: weight of onehot(y) (SoftRec: ½).
    """

    temperature: float = 1.0
    scaling: str = "log"
    onehot_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.scaling not in POPULARITY_SCALINGS:
            raise ValueError(f"scaling must be one of {POPULARITY_SCALINGS}; got {self.scaling!r}")

    def target(self, scored, context):
        ids = tf.cast(scored.candidate_ids, tf.int64)
        if self.scaling == "log":  # per item: score only the candidates (O(M) a step, not O(catalog))
            logits = popularity_target_logits(context.item_count(ids), self.temperature, self.scaling)
        else:  # csrec: min and max over every real item (index 0 = OOV)
            counts = context.item_count(tf.range(1, context.num_indices, dtype=tf.int64))
            logits = popularity_target_logits(counts, self.temperature, self.scaling)
            logits = tf.gather(tf.concat([logits[:1], logits], axis=0), ids)
        logits = tf.where(ids > 0, logits, tf.constant(float("-inf"), logits.dtype))  # OOV: never a target
        return restrict_shared(logits, scored)
