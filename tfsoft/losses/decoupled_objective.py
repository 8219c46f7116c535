"""DeSoRec's decoupled objective over a softmax objective's candidates (poster part A).

Per example with target y and the base objective's candidate set C, the student's logits z are
**exactly** the base's (temperature, logQ correction, masks) and there is **no CE term**:

    loss = λ2·BCE(q_b, p_b) + (1 − λ2)·KL(q̂ ‖ p̂)
    p_b = p_C(y),  q_b = λ1·q_y + 1 − λ1,  p̂, q̂ = the non-target parts of p_C and q, renormalised

(:func:`tfsoft.losses.soft_targets.decoupled_soft_target_loss`). The source gives ``q_y`` and
``q̂`` over C separately (:meth:`tfsoft.teachers.desorec.DesorecTarget.parts`): ``q_y`` is the
target's own probability, not its share of q restricted to C (which on sampled or in-batch
candidates the renormalisation would push towards 1); ``q̂`` is the self-normalised restriction
of the non-target part to C's other candidates, and where it is empty (C holds none of its
support) the KL term of that row is 0. A source without ``parts`` (any
:class:`tfsoft.losses.soft_target_objective.TargetSource`) is split from its ``target``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses.soft_target_objective import OverSoftmaxCandidates
from tfsoft.losses.soft_targets import decoupled_soft_target_loss


def decoupled_parts(source, scored, context):
    """(q_y [N], q̂ [N, M]) from ``source.parts`` or, failing that, from its whole target."""
    if hasattr(source, "parts"):
        return source.parts(scored, context)
    target = tf.broadcast_to(source.target(scored, context), tf.shape(scored.logits))  # [M]: one row for all
    onehot = tf.one_hot(tf.cast(scored.positive_index, tf.int32), tf.shape(target)[-1], dtype=target.dtype)
    q_y = tf.reduce_sum(target * onehot, axis=-1)
    rest = target * (1 - onehot)
    return q_y, tf.math.divide_no_nan(rest, tf.reduce_sum(rest, axis=-1, keepdims=True))


@dataclass(frozen=True)
class DecoupledSoftTargetLoss(OverSoftmaxCandidates):
    """``base``'s candidates and logits with DeSoRec's decoupled loss (module docstring).

    Attributes:
        base: a softmax objective (full, sampled or in-batch).
        source: where q comes from (:class:`tfsoft.teachers.desorec.DesorecTarget`).
        lambda1: λ1, the weight of q in the coupled target (DeSoRec's script: 0.3).
        lambda2: λ2, the weight of the binary term (DeSoRec's script: 0.7).
    """

    lambda1: float = 0.3
    lambda2: float = 0.7
    name = "desorec"

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lambda1", "lambda2"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ConfigError(f"soft_target.{key} must be in (0, 1]; got {value!r}")

    def per_example(self, query, positive, positive_ids, source):
        scored = self.base.candidate_logits(query, positive, positive_ids, source)
        q_y, rest = decoupled_parts(self.source, scored, source)
        q_y = tf.cast(q_y, scored.logits.dtype)[:, tf.newaxis]
        onehot = tf.one_hot(tf.cast(scored.positive_index, tf.int32), tf.shape(scored.logits)[-1],
                            dtype=scored.logits.dtype)
        # q_y on y, (1 − q_y)·q̂ elsewhere: the loss reads q_y and renormalises the rest (0 rest: no KL term)
        target = q_y * onehot + (1 - q_y) * tf.cast(rest, scored.logits.dtype)
        return decoupled_soft_target_loss(scored.logits, scored.positive_index, target, self.lambda1, self.lambda2,
                                          student_mask=scored.keep())
