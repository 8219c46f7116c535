"""Query and candidate encoders. Towers know nothing about losses.

Names are imported on first use, so ``tfsoft.towers.sections`` (config validation) loads
without TensorFlow.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "features": ("FeatureTower",),
    "gru": ("GRUTower",),
    "history_pooling": ("HistoryPoolingTower",),
    "id_tower": ("IdTower", "make_embedding"),
    "lightgcn": ("LightGCNEncoder", "LightGCNItemTower", "LightGCNUserTower", "normalized_adjacency"),
    "sasrec": ("SASRecTower",),
    "sections": ("CANDIDATE_TOWERS", "QUERY_TOWERS", "TowerContext"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tfsoft.towers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tfsoft.towers.{module}"), name)
    globals()[name] = value
    return value
