"""Retrieval losses: pure TensorFlow maths (``logits``, ``softmax``, ``pairwise``,
``reduction``), the objectives that wire them to a model (``objectives``) and their config
sections (``sections``, TensorFlow-free).

Names are imported on first use, so ``tfsoft.losses.sections`` (config validation) loads
without TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "objectives": ("BCE", "BPR", "FullSoftmax", "InBatchSoftmax", "RetrievalLoss", "SampledSoftmax", "StepContext"),
    "pairwise": ("bce_loss", "bpr_loss"),
    "reduction": ("weighted_mean",),
    "softmax": ("full_softmax_loss", "in_batch_softmax_loss", "sampled_softmax_loss", "softmax_cross_entropy"),
    "sections": ("LOSSES",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tfsoft.losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tfsoft.losses.{module}"), name)
    globals()[name] = value
    return value
