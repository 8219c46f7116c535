"""The ``soft_target`` config section: which source gives the soft target, and its keys.

Sources are registered in :data:`SOFT_TARGETS`; a section reads only its own keys (anything
else is an error naming the source and its keys) and wraps the configured softmax loss in a
:class:`tfsoft.losses.soft_target_objective.SoftTargetLoss`. TensorFlow is imported only when
the objective is built.

Example:
    >>> SOFT_TARGETS.parse({"name": "popularity", "temperature": 3}).temperature
    3.0
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, model_validator

from tfsoft.registry import Component, Registry

SOFT_TARGETS = Registry("soft-target source")


class SoftTargetSection(Component):
    """Base of a ``soft_target`` section: α and the student's temperature, shared by every source."""

    alpha: float = Field(0.5, ge=0, le=1, description="α: loss = (1 − α)·CE(onehot) + α·H(d, p)")
    student_temperature: Optional[float] = Field(
        None, gt=0, description="T of the student in the soft term (scaled by (T/τ)²); default: the loss's own logits")
    #: keys that moved or were renamed: old key -> hint shown in the error
    moved_keys: ClassVar[dict[str, str]] = {}

    def source(self, config=None, prepared=None):
        """The runtime target source (:class:`tfsoft.losses.soft_target_objective.TargetSource`);
        ``config`` and ``prepared`` are the student's (teacher sources check against them)."""
        raise NotImplementedError

    def wrap(self, base, config=None, prepared=None):
        """``base`` (a softmax objective) with this soft-target term."""
        from tfsoft.losses.soft_target_objective import SoftTargetLoss

        return SoftTargetLoss(base, self.source(config, prepared), alpha=self.alpha,
                              student_temperature=self.student_temperature)

    def teacher_runs_used(self) -> list[str]:
        """Run directories this source reads (recorded in the student's run)."""
        return []


@SOFT_TARGETS.register
class LabelSmoothingSection(SoftTargetSection):
    """``label_smoothing`` (LS): d uniform over the valid candidates; α is the smoothing ε."""

    name: Literal["label_smoothing"] = "label_smoothing"
    alpha: float = Field(0.1, ge=0, le=1, description="ε: loss = (1 − ε)·CE(onehot) + ε·H(uniform, p)")

    def source(self, config=None, prepared=None):
        from tfsoft.teachers.sources import UniformTarget

        return UniformTarget()


@SOFT_TARGETS.register
class PopularitySection(SoftTargetSection):
    """``popularity`` (SoftRec POP+, Eq. 6): d = ½(softmax(pop/T) + onehot_y), training counts only."""

    name: Literal["popularity"] = "popularity"
    temperature: float = Field(1.0, gt=0, description="T softening the popularity scores (SoftRec: 1-10)")
    scaling: Literal["log", "csrec"] = Field(
        "log", description="log: log(1 + count); csrec: 5·(2·count/(max + min) − 1), CSRec's scaling")

    def source(self, config=None, prepared=None):
        from tfsoft.teachers.sources import PopularityTarget

        return PopularityTarget(temperature=self.temperature, scaling=self.scaling)


@SOFT_TARGETS.register
class TeacherSection(SoftTargetSection):
    """``teacher`` (SoftRec SKD with the student's own tower, CKD with another; CSRec's averaged
    teachers): frozen finished runs score the student's candidates; d = Σ w_k softmax(t_k/T),
    mixed with onehot_y by ``onehot_weight`` (SoftRec: ½)."""

    name: Literal["teacher"] = "teacher"
    teacher_runs: list[str] = Field(min_length=1, description="run directories of the teachers (tfsoft train)")
    teacher_weights: Optional[list[float]] = Field(
        None, description="one weight >= 0 per teacher, averaging their probabilities (default: equal)")
    temperature: float = Field(1.0, gt=0, description="T softening the teachers' logits")
    onehot_weight: float = Field(0.5, ge=0, le=1, description="weight of onehot(y) in the target (SoftRec: 0.5)")
    checkpoint: Literal["best", "last"] = Field("best", description="the teachers' checkpoint")

    @model_validator(mode="after")
    def _weights(self):
        if self.teacher_weights is not None:
            if len(self.teacher_weights) != len(self.teacher_runs):
                raise ValueError(f"teacher_weights has {len(self.teacher_weights)} values for "
                                 f"{len(self.teacher_runs)} teacher_runs")
            if any(w < 0 for w in self.teacher_weights) or sum(self.teacher_weights) <= 0:
                raise ValueError(f"teacher_weights must be >= 0 with a positive sum; got {self.teacher_weights}")
        return self

    def teacher_runs_used(self) -> list[str]:
        return list(self.teacher_runs)

    def source(self, config=None, prepared=None):
        from tfsoft.teachers.teacher import TeacherTarget, load_teacher

        if config is None or prepared is None:
            raise ValueError("a teacher source is built with the student's config and data")
        teachers = tuple(load_teacher(run, student_config=config, student_prepared=prepared,
                                      checkpoint=self.checkpoint) for run in self.teacher_runs)
        weights = tuple(self.teacher_weights or [1.0] * len(teachers))
        return TeacherTarget(teachers, weights, temperature=self.temperature, onehot_weight=self.onehot_weight)


@SOFT_TARGETS.register
class NeighbourSection(SoftTargetSection):
    """``neighbour`` (SoftRec CSN, Eq. 8–9): d = ½(p(·|c′; θ′, T) + onehot_y), c′ drawn uniformly
    from the K users most similar to the example's user (cosine of mean θ′ item vectors), θ′ a
    snapshot of the student refreshed at each epoch start (:mod:`tfsoft.teachers.neighbour`)."""

    name: Literal["neighbour"] = "neighbour"
    temperature: float = Field(1.0, gt=0, description="T softening θ′'s logits on the neighbour (SoftRec: 1-10)")
    num_neighbours: int = Field(10, ge=1, description="K: the neighbour c′ is drawn from the K most similar users")
    refresh: Literal["epoch"] = Field("epoch", description="when θ′ (queries, items, neighbours) is snapshot")
    index: Literal["brute_force", "scann"] = Field(
        "brute_force", description="neighbour search: exact (tfsoft.topk) or ScaNN (approximate, many users)")

    def source(self, config=None, prepared=None):
        from tfsoft.teachers.neighbour import NeighbourTarget

        if config is None or prepared is None:
            raise ValueError("a neighbour source is built with the student's config and data")
        return NeighbourTarget.from_data(prepared, max_history=config.data.max_history,
                                         num_neighbours=self.num_neighbours, temperature=self.temperature,
                                         index=self.index, seed=config.train.seed)


@SOFT_TARGETS.register
class DesorecSection(Component):
    """``desorec`` (DeSoRec, poster A–B): **no CE term**; loss = λ2·BCE(q_b, p_b) + (1 − λ2)·KL(q̂ ‖ p̂)
    (:mod:`tfsoft.losses.decoupled_objective`), q from label propagation over the training
    examples embedded by one base run's query tower (:mod:`tfsoft.teachers.desorec`).

    β: one default, 2.0, the authors' value for Last.FM with both GRU4Rec and SASRec (their
    ``LE_train.py`` table; it tracks the data set more than the backbone: ML 0.5 for both,
    Diginetica 2 for GRU4Rec and 1 for SASRec). It is a scale on distances between queries in
    logit units (query / τ), so a base with another temperature may want another β.
    """

    name: Literal["desorec"] = "desorec"
    teacher_runs: list[str] = Field(min_length=1, max_length=1,
                                    description="exactly one base run (plain CE) whose query tower embeds the nodes")
    lambda1: float = Field(0.3, gt=0, le=1, description="λ1: q_b = λ1·q_y + 1 − λ1 (DeSoRec's script: 0.3)")
    lambda2: float = Field(0.7, gt=0, le=1, description="λ2: weight of the binary term (DeSoRec's script: 0.7)")
    propagation_alpha: float = Field(0.5, ge=0, le=1, description="α of q^{t+1} = α·W·q^t + (1 − α)·q⁰")
    iterations: int = Field(20, ge=0, description="label-propagation rounds T")
    beta: float = Field(2.0, gt=0, description="β of W = softmax(−distance/β) (class docstring)")
    graph: Literal["auto", "cluster", "knn"] = Field(
        "auto", description="cluster: dense W inside K-means clusters (the authors'); knn: top-k neighbours, "
                            "sparse; auto: cluster up to tfsoft.teachers.desorec.AUTO_CLUSTER_MAX_NODES nodes")
    num_clusters: int = Field(16, ge=1, description="K-means clusters of graph 'cluster' (the authors': 16)")
    num_neighbours: int = Field(20, ge=1, description="neighbours per node of graph 'knn'")
    top_m: int = Field(32, ge=1, description="target entries kept per node")
    checkpoint: Literal["best", "last"] = Field("best", description="the base run's checkpoint")
    moved_keys: ClassVar[dict[str, str]] = {
        "alpha": "desorec has no CE term to mix with: its weights are lambda1 and lambda2; "
                 "label propagation's α is propagation_alpha",
        "temperature": "desorec's targets are not softened by a temperature; beta scales W's distances",
        "student_temperature": "desorec scores the student's own logits",
    }

    def teacher_runs_used(self) -> list[str]:
        return list(self.teacher_runs)

    def source(self, config=None, prepared=None):
        from tfsoft.teachers.desorec import desorec_target

        return desorec_target(self, config, prepared)

    def wrap(self, base, config=None, prepared=None):
        from tfsoft.losses.decoupled_objective import DecoupledSoftTargetLoss

        return DecoupledSoftTargetLoss(base, self.source(config, prepared), lambda1=self.lambda1,
                                       lambda2=self.lambda2)
