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

from pydantic import Field

from tfsoft.registry import Component, Registry

SOFT_TARGETS = Registry("soft-target source")


class SoftTargetSection(Component):
    """Base of a ``soft_target`` section: α and the student's temperature, shared by every source."""

    alpha: float = Field(0.5, ge=0, le=1, description="α: loss = (1 − α)·CE(onehot) + α·H(d, p)")
    student_temperature: Optional[float] = Field(
        None, gt=0, description="T of the student in the soft term (scaled by (T/τ)²); default: the loss's own logits")
    #: keys that moved or were renamed: old key -> hint shown in the error
    moved_keys: ClassVar[dict[str, str]] = {}

    def source(self):
        """The runtime target source (:class:`tfsoft.losses.soft_target_objective.TargetSource`)."""
        raise NotImplementedError

    def wrap(self, base):
        """``base`` (a softmax objective) with this soft-target term."""
        from tfsoft.losses.soft_target_objective import SoftTargetLoss

        return SoftTargetLoss(base, self.source(), alpha=self.alpha, student_temperature=self.student_temperature)


@SOFT_TARGETS.register
class LabelSmoothingSection(SoftTargetSection):
    """``label_smoothing`` (LS): d uniform over the valid candidates; α is the smoothing ε."""

    name: Literal["label_smoothing"] = "label_smoothing"
    alpha: float = Field(0.1, ge=0, le=1, description="ε: loss = (1 − ε)·CE(onehot) + ε·H(uniform, p)")

    def source(self):
        from tfsoft.teachers.sources import UniformTarget

        return UniformTarget()


@SOFT_TARGETS.register
class PopularitySection(SoftTargetSection):
    """``popularity`` (SoftRec POP+, Eq. 6): d = ½(softmax(pop/T) + onehot_y), training counts only."""

    name: Literal["popularity"] = "popularity"
    temperature: float = Field(1.0, gt=0, description="T softening the popularity scores (SoftRec: 1-10)")
    scaling: Literal["log", "csrec"] = Field(
        "log", description="log: log(1 + count); csrec: 5·(2·count/(max + min) − 1), CSRec's scaling")

    def source(self):
        from tfsoft.teachers.sources import PopularityTarget

        return PopularityTarget(temperature=self.temperature, scaling=self.scaling)
