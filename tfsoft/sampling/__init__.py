"""Negative samplers and item-frequency estimation for sampled and in-batch softmax."""

from tfsoft.sampling.frequency import StreamingFrequencyEstimator, bucket_of
from tfsoft.sampling.proposals import (
    PROPOSALS,
    log_uniform_proposal,
    make_proposal,
    uniform_proposal,
    unigram_proposal,
)
from tfsoft.sampling.sampler import LOG_ZERO, NegativeSampler

__all__ = [
    "LOG_ZERO",
    "PROPOSALS",
    "NegativeSampler",
    "StreamingFrequencyEstimator",
    "bucket_of",
    "log_uniform_proposal",
    "make_proposal",
    "uniform_proposal",
    "unigram_proposal",
]
