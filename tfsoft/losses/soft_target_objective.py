"""A softmax objective plus a soft-target term over the same candidates (SoftRec, CSRec).

Per example with context c, target y and the base objective's candidate set C (the whole
catalog for ``full_softmax``; {y} ∪ S for ``sampled_softmax``; the batch's positives ∪ mixed
negatives for ``in_batch``), the student's logits z are **exactly** the base objective's
(temperature, logQ correction, masks), p_C = softmax(z). A target source gives softened
logits t over C; the target is the self-normalised restriction of softmax(t) to C with the
same per-candidate correction as the student (:func:`tfsoft.losses.soft_targets.restricted_target`),
masked where the student is masked, optionally mixed with onehot(y) (SoftRec's ½(d + onehot)).

    loss = (1 − α)·CE(onehot_y, p_C) + α·H(d_C, p_C)        (SoftRec Eq. 4–5)

H(d, p) = KL(d ‖ p) + H(d): the gradient of KL(target ‖ model), the direction SoftRec, CSRec
and DeSoRec compute. With ``student_temperature`` T the soft term uses s/T and is scaled by
(T/τ)² (Hinton et al. 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses.objectives import RetrievalLoss, SoftmaxObjective, StepContext
from tfsoft.losses.softmax import CandidateLogits
from tfsoft.losses.soft_targets import mix_with_onehot, mixed_target_cross_entropy, restricted_target, soft_target_loss


class TargetSource(Protocol):
    """Where a soft target comes from (``tfsoft/teachers/``).

    Attributes:
        onehot_weight: weight of onehot(y) mixed into the target (SoftRec's ½(d + onehot): 0.5;
            label smoothing: 0).
        sums_to_one: optional (default False): every row of every target this source returns
            sums to 1 (finite logits over candidates whose positive is always kept: a teacher),
            so the loss need not read the row sums back.
    """

    onehot_weight: float

    def target(self, scored: CandidateLogits, context: StepContext) -> tf.Tensor:
        """[B, M] the target over the student's candidates (rows summing to 1, 0 on masked
        columns), or [M] when one row serves every example (a row-shared source under full
        softmax): usually :func:`restrict` of softened logits."""


def restrict(target_logits: tf.Tensor, scored: CandidateLogits, finite: bool = False) -> tf.Tensor:
    """Softened target logits over the candidates (``[M]`` or ``[B, M]``) -> the target restricted
    to the student's candidate set with the student's logQ correction and masks
    (:func:`tfsoft.losses.soft_targets.restricted_target`). Where the mask is one ``[M]`` row for
    every example (full softmax) it is used as such: row-shared ``[M]`` logits then stay one
    ``[M]`` row, so the loss needs no [B, M] target
    (:func:`~tfsoft.losses.soft_targets.mixed_target_cross_entropy`), and per-row logits skip
    reading the mask back from the [B, M] student logits. ``finite``: the logits are finite (a
    teacher's scores), so no row is empty: every softmax objective keeps each row's positive."""
    keep = scored.keep() if scored.column_keep is None else scored.column_keep
    return restricted_target(target_logits, scored.log_expected_count, keep, finite=finite)


@dataclass(frozen=True)
class OverSoftmaxCandidates(RetrievalLoss):
    """A loss over a softmax objective's own candidates and logits, with a target source: the
    base's samplers and frequency estimator are its own (:class:`SoftTargetLoss`,
    :class:`tfsoft.losses.decoupled_objective.DecoupledSoftTargetLoss`).

    Attributes:
        base: a softmax objective (full, sampled or in-batch).
        source: a :class:`TargetSource`.
    """

    base: SoftmaxObjective
    source: TargetSource

    def __post_init__(self) -> None:
        if not isinstance(self.base, SoftmaxObjective):
            raise ConfigError(f"soft targets need a softmax loss (full_softmax, sampled_softmax or in_batch); "
                              f"got {type(self.base).__name__}")

    @property
    def frequency(self) -> str:
        """The base objective's item-frequency source (the model builds a streaming estimator for it)."""
        return getattr(self.base, "frequency", "counts")

    def samplers(self):
        return self.base.samplers()


@dataclass(frozen=True)
class SoftTargetLoss(OverSoftmaxCandidates):
    """``base`` plus a soft target from ``source`` over the base's candidates (module docstring).

    Attributes:
        base: a softmax objective (full, sampled or in-batch).
        source: a :class:`TargetSource`.
        alpha: α, the weight of the soft term.
        student_temperature: T of the student in the soft term; None = the base's logits.
    """

    alpha: float = 0.5
    student_temperature: float | None = None
    name = "soft_target"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"soft_target.alpha must be in [0, 1]; got {self.alpha!r}")

    def per_example(self, query, positive, positive_ids, source):
        scored = self.base.candidate_logits(query, positive, positive_ids, source)
        target = self.source.target(scored, source)
        if self.student_temperature is None:
            # H is linear in the target: with d' = w·onehot + (1 − w)·d (SoftRec's ½(d + onehot)),
            # (1 − α)·CE(onehot) + α·H(d', p) = H(α(1 − w)·d + (1 − α + αw)·onehot, p), computed
            # over the base's (corrected, masked) logits without writing the mixed [B, M] label
            # (bench/bench_soft_target_overhead.py)
            weight = self.source.onehot_weight
            return mixed_target_cross_entropy(scored.logits, scored.positive_index, target,
                                              self.alpha * (1 - weight), 1 - self.alpha + self.alpha * weight,
                                              query=scored.query, columns=scored.columns,
                                              target_sums_to_one=getattr(self.source, "sums_to_one", False))
        keep = scored.keep()
        if self.source.onehot_weight:
            target = mix_with_onehot(target, scored.positive_index, self.source.onehot_weight)
        return soft_target_loss(scored.scores(), scored.positive_index, target, self.alpha, student_mask=keep,
                                student_temperature=self.student_temperature,
                                base_temperature=self.base.temperature,
                                student_log_expected_count=scored.log_expected_count)
