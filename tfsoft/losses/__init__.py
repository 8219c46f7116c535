"""Retrieval losses: pure TensorFlow maths (``logits``, ``softmax``, ``pairwise``,
``reduction``) and the objectives that wire them to a model (``objectives``).
"""

from tfsoft.losses.objectives import (
    BCE,
    BPR,
    LOSSES,
    FullSoftmax,
    InBatchSoftmax,
    RetrievalLoss,
    SampledSoftmax,
)
from tfsoft.losses.pairwise import bce_loss, bpr_loss
from tfsoft.losses.reduction import weighted_mean
from tfsoft.losses.softmax import (
    full_softmax_loss,
    in_batch_softmax_loss,
    sampled_softmax_loss,
    softmax_cross_entropy,
)

__all__ = [
    "BCE", "BPR", "FullSoftmax", "InBatchSoftmax", "LOSSES", "RetrievalLoss", "SampledSoftmax",
    "bce_loss", "bpr_loss", "full_softmax_loss", "in_batch_softmax_loss", "sampled_softmax_loss",
    "softmax_cross_entropy", "weighted_mean",
]
