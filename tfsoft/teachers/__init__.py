"""Where soft targets come from: label smoothing, item popularity, teacher runs, similar users'
predictions (``neighbour``) and label propagation over training examples (``desorec``). ``sections`` holds the ``soft_target`` config sections
(TensorFlow-free); ``sources`` the runtime sources the soft-target objective
(:mod:`tfsoft.losses.soft_target_objective`) asks for target logits over its candidates.
"""

from __future__ import annotations

from tfsoft.lazy import lazy_exports

_EXPORTS = {
    "sections": ("SOFT_TARGETS",),
    "sources": ("PopularityTarget", "UniformTarget"),
    "teacher": ("TeacherTarget", "load_teacher", "teacher_record"),
    "neighbour": ("NeighbourTarget",),
    "desorec": ("DesorecTarget",),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
