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

from pydantic import Field, model_validator

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
    mask_seen: bool = Field(True, description="mask a sampled negative that is any training item of the example's "
                                              "user (Rendle et al. 2009; TIL Eq. 10), not only its positive; needs "
                                              "the user id in the batch (id/graph/feature query towers; was false)")

    def build(self):
        from tfsoft.losses import objectives

        return getattr(objectives, self.objective)(num_negatives=self.num_negatives, proposal=self.proposal,
                                                   mask_seen=self.mask_seen)


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


@LOSSES.register
class TILSection(LossSection):
    """``til``: BPR with a learned weight per (user, positive, negative) triplet, trained by
    bilevel optimisation (TIL, Wu et al.; :mod:`tfsoft.til`). Backbones: MF (``id`` towers) and
    LightGCN; one example per interaction (``data.example_mode: position``)."""

    name: Literal["til"] = "til"
    strategy: Literal["uni", "multi"] = Field("uni", description="Uni-Interest (Eq. 5) or Multi-Interest (Eq. 6)")
    num_negatives: int = Field(1, ge=1, description="negatives per positive (1 in the paper)")
    proposal: Proposal = Field("uniform", description="where negatives come from (the user's items are masked)")
    num_clusters: int = Field(60, ge=1, description="K item clusters (multi)")
    alpha: float = Field(1.0, ge=0, description="α of Eq. 6, weight of the cluster terms (multi)")
    gamma: float = Field(0.01, ge=0, description="γ of Eq. 13, weight of the clustering KL (multi, end_to_end)")
    inner_lr: float = Field(1e-3, gt=0, description="η_in of the look-ahead Θ' = Θ - η_in ∇J_in (code: 1e-3)")
    weight_activation: Literal["sigmoid", "softplus"] = Field(
        "sigmoid", description="generator output: sigmoid (paper, Eq. 3) or softplus (authors' code)")
    clustering: Literal["end_to_end", "kmeans"] = Field(
        "end_to_end", description="learned centres, Student-t + KL (paper) or periodic K-means (TIL-MIK, the code)")
    hidden_units: int = Field(64, ge=1, description="the generator's hidden width")
    generator_optimizer: Literal["adam", "sgd"] = Field("adam", description="OPT_Λ")
    generator_learning_rate: float = Field(1e-3, gt=0, description="OPT_Λ's learning rate")
    detach_state: bool = Field(True, description="the generator's state is a constant of Θ (false: the code)")
    pretrain_steps: int = Field(500, ge=0, description="steps before K-means initialises the clusters (multi)")
    refresh_every: int = Field(10, ge=1, description="steps between cluster-membership refreshes (multi)")
    kmeans_iterations: int = Field(20, ge=1, description="Lloyd iterations per K-means run (multi)")
    weight_normalisation: Literal["none", "batch_mean"] = Field(
        "none", description="batch_mean: w / its batch mean (the code's 'norm' trick); none: the paper")
    weighting: Literal["learned", "uniform"] = Field(
        "learned", description="uniform: every weight 1, no generator (BPR with the same seen-masked negatives)")

    #: keys that only the Multi-Interest strategy reads
    multi_keys: ClassVar[tuple[str, ...]] = ("num_clusters", "alpha", "gamma", "clustering", "pretrain_steps",
                                             "refresh_every", "kmeans_iterations")

    @model_validator(mode="after")
    def _keys_of_the_strategy(self):
        if self.strategy == "uni":
            unread = [key for key in self.multi_keys if key in self.model_fields_set]
            if unread:
                raise ValueError(f"key {unread[0]!r} is read only with strategy 'multi'; got strategy 'uni' "
                                 f"(multi-only keys: {', '.join(self.multi_keys)})")
        if self.weighting == "uniform" and self.strategy == "multi":
            raise ValueError("weighting 'uniform' learns no weights, so it has no states: use strategy 'uni'")
        if self.strategy == "multi" and self.clustering == "kmeans" and "gamma" in self.model_fields_set:
            raise ValueError("key 'gamma' weighs the end-to-end clustering loss; clustering 'kmeans' has none")
        return self

    def build(self):
        from tfsoft.til.objective import TIL

        return TIL(**self.model_dump(exclude={"name"}))
