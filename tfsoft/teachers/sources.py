"""Soft-target sources that need no teacher model: uniform (label smoothing) and item popularity.

Both give the same target logits to every row of the step (a function of the candidate item
alone): :func:`~tfsoft.losses.soft_targets.restricted_target` then takes the exponentials once
per column and only the mask and the normaliser per row (``bench/bench_soft_target_overhead.py``
measures what the soft term costs per step).
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.losses.soft_target_objective import restrict
from tfsoft.losses.soft_targets import POPULARITY_SCALINGS, popularity_target_logits, uniform_target_logits


@dataclass(frozen=True)
class UniformTarget:
    """Label smoothing (LS; SoftRec §4.1 baseline): d uniform over the valid candidates, so
    the loss is ``(1 − α)·CE + α·H(uniform, p)``. Under a logQ-corrected base the restriction
    makes it the self-normalised estimate of the catalog-uniform target."""

    onehot_weight: float = 0.0

    def target(self, scored, context):
        return restrict(uniform_target_logits(tf.shape(scored.logits)[-1], scored.logits.dtype), scored)


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
        return restrict(logits, scored)
