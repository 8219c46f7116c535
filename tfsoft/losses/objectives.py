"""Retrieval objectives: which candidates a loss sees, and which maths it applies.

An objective is a small configuration object. The model hands it the (similarity-prepared)
query and positive embeddings and a :class:`StepContext` that can embed any item ids,
the whole catalog, gather tensors across replicas and give item log-frequencies; the
objective draws its negatives and calls the pure functions of :mod:`tfsoft.losses.softmax`
and :mod:`tfsoft.losses.pairwise`. Objectives hold no Keras state.

Example:
    >>> import tfsoft
    >>> loss = tfsoft.losses.InBatchSoftmax(temperature=0.1, log_q=True)
    >>> loss.name
    'in_batch'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses import logits as steps
from tfsoft.losses.pairwise import bce_loss, bpr_loss, seen_negative_mask
from tfsoft.losses.softmax import CandidateLogits, full_softmax_logits, in_batch_softmax_logits, sampled_softmax_logits


class StepContext(Protocol):
    """What the model offers an objective during one step (``tfsoft.model.TrainingStepContext``).

    An objective that needs more than embeddings (a soft-target term scoring the step's
    candidates with a teacher, a sampler conditioned on the query's features) reads the batch
    through :attr:`features` and maps its examples to batch rows with :meth:`example_rows`.
    """

    num_indices: int
    features: dict
    training: bool

    def embed(self, ids: tf.Tensor) -> tf.Tensor:
        """Prepared candidate embeddings of item ids (any shape -> shape + [d])."""

    def catalog(self) -> tf.Tensor:
        """Prepared embeddings of every item index, [V, d]."""

    def valid_items(self) -> tf.Tensor:
        """[V] bool: indices that are real items (index 0, OOV/padding, is not)."""

    def example_rows(self) -> tf.Tensor:
        """[N] int32: the batch row (of :attr:`features`) of each example of the step."""

    def gather(self, tensor: tf.Tensor) -> tf.Tensor:
        """Concatenate ``tensor`` across replicas along axis 0 (identity on one replica)."""

    def replica_offset(self) -> tf.Tensor:
        """Row of this replica's first example in the gathered batch."""

    def log_item_probability(self, ids: tf.Tensor) -> tf.Tensor:
        """log p_j, the probability that one training positive is item j."""

    def item_count(self, ids: tf.Tensor) -> tf.Tensor:
        """Training-split count of each item id (float32, same shape as ``ids``)."""

    def seen_keys(self) -> tf.Tensor | None:
        """Sorted int64 keys ``user·V + item`` of the training pairs
        (:func:`tfsoft.losses.pairwise.interaction_keys`), or None when the model has none."""

    def sampler(self, key: str) -> "object":
        """The negative sampler an objective registered under ``key`` (:meth:`RetrievalLoss.samplers`)."""

    def shared_negatives(self, key: str, num: int) -> tf.Tensor:
        """[num] ids from sampler ``key`` shared by the whole global batch (every replica the same)."""

    def per_example_negatives(self, key: str, batch: tf.Tensor, num: int) -> tf.Tensor:
        """[batch, num] ids from sampler ``key``, drawn for this replica's examples."""


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number; got {value!r}")


def _check_count(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")


@dataclass(frozen=True)
class SamplerSpec:
    """A negative sampler an objective needs: proposal name, unigram exponent."""

    proposal: str = "uniform"
    beta: float = 1.0


@dataclass(frozen=True)
class RetrievalLoss:
    """Base class: subclasses implement :meth:`per_example`."""

    name = "base"

    def samplers(self) -> dict[str, SamplerSpec]:
        """Samplers to build once the catalog is known (key -> spec)."""
        return {}

    def per_example(
        self, query: tf.Tensor, positive: tf.Tensor, positive_ids: tf.Tensor, source: StepContext
    ) -> tf.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class SoftmaxObjective(RetrievalLoss):
    """A softmax over a candidate set: subclasses build :meth:`candidate_logits`; the loss is
    their cross-entropy, and a soft-target term (:mod:`tfsoft.losses.soft_target_objective`)
    reuses the same logits, corrections and masks."""

    temperature: float = 1.0

    def candidate_logits(self, query, positive, positive_ids, source: StepContext) -> CandidateLogits:
        raise NotImplementedError

    def per_example(self, query, positive, positive_ids, source):
        return self.candidate_logits(query, positive, positive_ids, source).cross_entropy()


@dataclass(frozen=True)
class FullSoftmax(SoftmaxObjective):
    """Softmax over the whole catalog ("SM", SSM paper Eq. 2). Exact; small catalogs only."""

    temperature: float = 1.0
    name = "full_softmax"

    def __post_init__(self) -> None:
        _check_positive("temperature", self.temperature)

    def candidate_logits(self, query, positive, positive_ids, source):
        return full_softmax_logits(
            query, source.catalog(), positive_ids, temperature=self.temperature, valid_items=source.valid_items()
        )


@dataclass(frozen=True)
class SampledSoftmax(SoftmaxObjective):
    """Sampled softmax with N negatives from a proposal Q and logQ correction.

    Attributes:
        num_negatives: N, negatives per batch (shared) or per example.
        proposal: ``uniform`` | ``unigram`` (item frequency^β, SSM §4.4.2) | ``log_uniform`` (Zipf by rank).
        beta: unigram exponent in [0, 1].
        shared_negatives: one set of N for the whole batch (cheap) or N per example.
        temperature: τ.
        log_q: subtract ``log(N·Q(j))`` from the negatives' logits.
        remove_accidental_hits: mask negatives equal to the positive.
        correct_positive: also subtract ``log(N·Q(c⁺))`` from the positive's logit, as
            ``tf.nn.sampled_softmax_loss`` does. Off by default: the positive enters the
            partition function exactly (weight 1), the negatives estimate the rest of it
            (``E[Σ_k e^{s_k}/(N·Q(n_k))] = Σ_{j≠c⁺} e^{s_j}`` once accidental hits are
            removed), so loss and gradient converge to full softmax as N grows. Correcting
            the positive too shifts the loss by ``log(N·Q(c⁺))`` and biases the gradient by
            ``p(c⁺)``.
    """

    num_negatives: int = 256
    proposal: str = "unigram"
    beta: float = 1.0
    shared_negatives: bool = True
    temperature: float = 1.0
    log_q: bool = True
    remove_accidental_hits: bool = True
    correct_positive: bool = False
    name = "sampled_softmax"

    def __post_init__(self) -> None:
        _check_count("num_negatives", self.num_negatives, 1)
        _check_positive("temperature", self.temperature)

    def samplers(self):
        return {"negatives": SamplerSpec(self.proposal, self.beta)}

    def candidate_logits(self, query, positive, positive_ids, source):
        sampler = source.sampler("negatives")
        if self.shared_negatives:
            negative_ids = source.shared_negatives("negatives", self.num_negatives)
        else:
            negative_ids = source.per_example_negatives("negatives", tf.shape(query)[0], self.num_negatives)
        positive_count = negative_count = None
        if self.log_q and self.correct_positive:
            positive_count = sampler.log_expected_count(positive_ids, self.num_negatives)
        if self.log_q:
            negative_count = sampler.log_expected_count(negative_ids, self.num_negatives)
        return sampled_softmax_logits(
            query, positive, positive_ids, source.embed(negative_ids), negative_ids,
            temperature=self.temperature,
            positive_log_expected_count=positive_count,
            negative_log_expected_count=negative_count,
            remove_accidental_hits=self.remove_accidental_hits,
        )


@dataclass(frozen=True)
class InBatchSoftmax(SoftmaxObjective):
    """In-batch sampled softmax, "SSM" (the SSM paper's default: cosine + τ, batch positives
    as negatives), optionally with logQ correction and mixed negatives.

    Attributes:
        temperature: τ (0.1–0.2 with cosine similarity, SSM §3.1.2).
        log_q: subtract log of each candidate's expected count ``B·p_j`` (Yi et al. 2019).
        remove_duplicates: mask other columns holding the row's own positive.
        num_uniform_negatives: extra sampled items shared by the batch (mixed negative
            sampling, Yang et al. WWW'20); 0 = pure in-batch.
        mixed_proposal: proposal of those items (``uniform`` as in Yang et al.; ``unigram``,
            ``log_uniform``), with unigram exponent ``mixed_beta``.
        cross_replica: under a distribution strategy, use every replica's positives.
        frequency: where ``p_j`` comes from: ``counts`` (training item counts, known up front)
            or ``streaming`` (Yi et al. 2019 Algorithm 2, estimated during training; see
            :class:`tfsoft.sampling.StreamingFrequencyEstimator`).
    """

    temperature: float = 0.1
    log_q: bool = False
    remove_duplicates: bool = True
    num_uniform_negatives: int = 0
    mixed_proposal: str = "uniform"
    mixed_beta: float = 1.0
    cross_replica: bool = True
    frequency: str = "counts"
    name = "in_batch"

    def __post_init__(self) -> None:
        _check_positive("temperature", self.temperature)
        _check_count("num_uniform_negatives", self.num_uniform_negatives, 0)
        if self.frequency not in ("counts", "streaming"):
            raise ConfigError(f"frequency must be 'counts' or 'streaming'; got {self.frequency!r}")

    def samplers(self):
        return {"mixed": SamplerSpec(self.mixed_proposal, self.mixed_beta)} if self.num_uniform_negatives else {}

    def candidate_logits(self, query, positive, positive_ids, source):
        gather = source.gather if self.cross_replica else (lambda tensor: tensor)
        candidates = gather(positive)
        candidate_ids = gather(positive_ids)
        offset = source.replica_offset() if self.cross_replica else 0  # row i's positive: column i + offset
        batch = tf.cast(tf.shape(candidate_ids)[0], tf.float32)
        log_count = None
        if self.log_q:
            log_count = tf.math.log(batch) + source.log_item_probability(candidate_ids)
        if self.num_uniform_negatives:
            sampler = source.sampler("mixed")
            extra_ids = source.shared_negatives("mixed", self.num_uniform_negatives)
            candidates = tf.concat([candidates, source.embed(extra_ids)], axis=0)
            candidate_ids = tf.concat([candidate_ids, extra_ids], axis=0)
            if self.log_q:
                # Expected count of item j in the union of B positives and N draws from Q:
                # log(B·p_j + N·Q(j)).
                in_batch = tf.math.log(batch) + source.log_item_probability(candidate_ids)
                sampled = sampler.log_expected_count(candidate_ids, self.num_uniform_negatives)
                log_count = tf.reduce_logsumexp(tf.stack([in_batch, sampled]), axis=0)
        return in_batch_softmax_logits(
            query, candidates, candidate_ids,
            positive_offset=offset,
            temperature=self.temperature,
            candidate_log_expected_count=log_count,
            remove_duplicates=self.remove_duplicates,
        )


@dataclass(frozen=True)
class _PairwiseLoss(RetrievalLoss):
    """N sampled negatives per positive. A negative equal to the example's positive is always
    masked; with ``mask_seen`` so is one that is any training item of the example's user
    (:func:`tfsoft.losses.pairwise.seen_negative_mask`), when the step knows the training pairs
    and the batch carries the user id (``StepContext.seen_keys``)."""

    num_negatives: int = 1
    proposal: str = "uniform"
    mask_seen: bool = False

    def __post_init__(self) -> None:
        _check_count("num_negatives", self.num_negatives, 1)

    def samplers(self):
        return {"negatives": SamplerSpec(self.proposal)}

    def per_example(self, query, positive, positive_ids, source):
        negative_ids = source.per_example_negatives("negatives", tf.shape(query)[0], self.num_negatives)
        negatives = source.embed(negative_ids)
        positive_scores = tf.reduce_sum(query * positive, axis=-1)
        negative_scores = tf.einsum("bd,bnd->bn", query, negatives)
        keep = tf.not_equal(negative_ids, positive_ids[:, tf.newaxis])
        seen_keys = source.seen_keys() if self.mask_seen else None
        if seen_keys is not None and "user" in source.features:
            users = tf.gather(source.features["user"], source.example_rows())
            keep = tf.logical_and(keep, seen_negative_mask(users, negative_ids, seen_keys, source.num_indices))
        return self._loss(positive_scores, negative_scores, keep)


@dataclass(frozen=True)
class BPR(_PairwiseLoss):
    """BPR with N uniformly sampled negatives per example (SSM paper §4.1.1: N = 1)."""

    name = "bpr"

    @staticmethod
    def _loss(positive_scores, negative_scores, keep):
        return bpr_loss(positive_scores, negative_scores, keep)


@dataclass(frozen=True)
class BCE(_PairwiseLoss):
    """Binary cross-entropy with N uniformly sampled negatives per positive (SSM §4.1.1: 1:4)."""

    num_negatives: int = 4
    name = "bce"

    @staticmethod
    def _loss(positive_scores, negative_scores, keep):
        return bce_loss(positive_scores, negative_scores, keep)


#: Masking constant re-exported for tests.
MASKED_LOGIT = steps.MASKED_LOGIT
