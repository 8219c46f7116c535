"""The ``loss`` config section of each objective, with its defaults and its builder.

One class per objective, registered in :data:`LOSSES` under the ``loss.name`` it answers to.
A section reads only its own keys (a key another objective reads is an error naming this
objective and its keys) and builds its :class:`tfsoft.losses.objectives.RetrievalLoss` with
:meth:`LossSection.build`. TensorFlow is imported only when an objective is built, so a
config is validated before TensorFlow loads.

Adding an objective: its class (``tfsoft/losses/objectives.py`` or its own module), a section
here with ``@LOSSES.register``, and its tests.

Example:
    >>> section = LOSSES.parse({"name": "in_batch", "temperature": 0.05, "mixed_negatives": 512})
    >>> section.build()                                      # doctest: +SKIP
    InBatchSoftmax(temperature=0.05, ..., num_uniform_negatives=512, ...)
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from tfsoft.registry import Component, Registry

LOSSES = Registry("loss")

Proposal = Literal["uniform", "unigram", "log_uniform"]


class LossSection(Component):
    """Base of a ``loss`` section: subclasses declare ``name``, their keys and :meth:`build`."""

    #: keys that moved or were renamed: old key -> hint shown in the error
    moved_keys: ClassVar[dict[str, str]] = {}
    #: a softmax over a candidate set, which a ``soft_target`` term can reuse
    softmax: ClassVar[bool] = False

    def build(self):
        """The objective (a :class:`tfsoft.losses.objectives.RetrievalLoss`)."""
        raise NotImplementedError


@LOSSES.register
class FullSoftmaxSection(LossSection):
    """``full_softmax``: softmax over the whole catalog (SSM paper Eq. 2)."""

    softmax: ClassVar[bool] = True

    name: Literal["full_softmax"] = "full_softmax"
    temperature: float = Field(0.1, gt=0, description="τ")

    def build(self):
        from tfsoft.losses.objectives import FullSoftmax

        return FullSoftmax(temperature=self.temperature)


@LOSSES.register
class SampledSoftmaxSection(LossSection):
    """``sampled_softmax``: N negatives from a proposal Q with logQ correction (SSM §4.4.2)."""

    softmax: ClassVar[bool] = True

    name: Literal["sampled_softmax"] = "sampled_softmax"
    temperature: float = Field(0.1, gt=0, description="τ")
    num_negatives: int = Field(256, ge=1, description="N negatives per batch (shared) or per example")
    proposal: Proposal = Field("unigram", description="Q: uniform, unigram (count^beta) or log_uniform (Zipf by rank)")
    beta: float = Field(1.0, ge=0, le=1, description="unigram exponent")
    shared_negatives: bool = Field(True, description="one set of N for the whole batch, else N per example")
    log_q_correction: bool = Field(False, description="subtract log(N·Q(j)) from the negatives' logits")
    remove_accidental_hits: bool = Field(True, description="mask negatives equal to the row's positive")
    correct_positive: bool = Field(False, description="also subtract log(N·Q(y)) from the positive's logit "
                                                      "(as tf.nn.sampled_softmax_loss)")

    def build(self):
        from tfsoft.losses.objectives import SampledSoftmax

        return SampledSoftmax(num_negatives=self.num_negatives, proposal=self.proposal, beta=self.beta,
                              shared_negatives=self.shared_negatives, temperature=self.temperature,
                              log_q=self.log_q_correction, remove_accidental_hits=self.remove_accidental_hits,
                              correct_positive=self.correct_positive)


@LOSSES.register
class InBatchSection(LossSection):
    """``in_batch``: in-batch sampled softmax ("SSM") with logQ correction and 1,024 mixed uniform
    negatives by default (the generalising setting of ``bench/bench_recipes.py``: on lastfm_small
    plain SSM loses about 1.3 points of validation NDCG@10 with SASRec and 3.5 with GRU4Rec)."""

    softmax: ClassVar[bool] = True

    name: Literal["in_batch"] = "in_batch"
    temperature: float = Field(0.1, gt=0, description="τ (0.1-0.2 with cosine, SSM §3.1.2)")
    log_q_correction: bool = Field(True, description="subtract log of each candidate's expected count "
                                                     "(was false before the recipe search)")
    remove_duplicates: bool = Field(True, description="mask other columns holding the row's own positive")
    mixed_negatives: int = Field(1024, ge=0, description="extra sampled negatives shared by the batch "
                                                         "(mixed negative sampling, Yang et al. WWW'20; was 0)")
    mixed_proposal: Proposal = Field("uniform", description="proposal of the mixed negatives")
    mixed_beta: float = Field(1.0, ge=0, le=1, description="unigram exponent of the mixed proposal")
    frequency_estimation: Literal["counts", "streaming"] = Field(
        "counts", description="logQ's p_j: training counts, or the streaming estimate of Yi et al. 2019")
    cross_replica: bool = Field(True, description="under a distribution strategy, every replica's positives "
                                                  "are candidates")
    moved_keys: ClassVar[dict[str, str]] = {
        "num_negatives": "in_batch calls its extra sampled negatives 'mixed_negatives'",
        "proposal": "in_batch samples its mixed negatives from 'mixed_proposal'",
        "beta": "in_batch's unigram exponent is 'mixed_beta'",
    }

    def build(self):
        from tfsoft.losses.objectives import InBatchSoftmax

        return InBatchSoftmax(temperature=self.temperature, log_q=self.log_q_correction,
                              remove_duplicates=self.remove_duplicates, num_uniform_negatives=self.mixed_negatives,
                              mixed_proposal=self.mixed_proposal, mixed_beta=self.mixed_beta,
                              cross_replica=self.cross_replica, frequency=self.frequency_estimation)


class _PairwiseSection(LossSection):
    """Shared keys of the pairwise/pointwise objectives: N sampled negatives per positive."""

    proposal: Proposal = Field("uniform", description="where negatives come from")

    def build(self):
        from tfsoft.losses import objectives

        return getattr(objectives, self.objective)(num_negatives=self.num_negatives, proposal=self.proposal)


@LOSSES.register
class BPRSection(_PairwiseSection):
    """``bpr``: Bayesian personalised ranking with N sampled negatives (SSM §4.1.1: N = 1)."""

    name: Literal["bpr"] = "bpr"
    num_negatives: int = Field(1, ge=1, description="negatives per positive")
    objective: ClassVar[str] = "BPR"


@LOSSES.register
class BCESection(_PairwiseSection):
    """``bce``: binary cross-entropy with N sampled negatives per positive (SSM §4.1.1: 1:4)."""

    name: Literal["bce"] = "bce"
    num_negatives: int = Field(4, ge=1, description="negatives per positive")
    objective: ClassVar[str] = "BCE"
