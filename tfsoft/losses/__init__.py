"""Retrieval losses: pure TensorFlow maths (``logits``, ``softmax``, ``pairwise``,
``reduction``, ``soft_targets``), the objectives that wire them to a model (``objectives``) and their config
sections (``sections``, TensorFlow-free).

Names are imported on first use, so ``tfsoft.losses.sections`` (config validation) loads
without TensorFlow.
"""

from __future__ import annotations

from tfsoft.lazy import lazy_exports

_EXPORTS = {
    "objectives": ("BCE", "BPR", "FullSoftmax", "InBatchSoftmax", "RetrievalLoss", "SampledSoftmax",
                   "SoftmaxObjective", "StepContext"),
    "pairwise": ("bce_loss", "bpr_loss"),
    "reduction": ("weighted_mean",),
    "softmax": ("CandidateLogits", "full_softmax_logits", "full_softmax_loss", "in_batch_softmax_logits",
                "in_batch_softmax_loss", "sampled_softmax_logits", "sampled_softmax_loss", "softmax_cross_entropy"),
    "soft_target_objective": ("SoftTargetLoss", "TargetSource"),
    "sections": ("LOSSES",),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
