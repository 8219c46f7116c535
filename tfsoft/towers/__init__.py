"""Query and candidate encoders. Towers know nothing about losses.

Names are imported on first use, so ``tfsoft.towers.sections`` (config validation) loads
without TensorFlow.
"""

from __future__ import annotations

from tfsoft.lazy import lazy_exports

_EXPORTS = {
    "features": ("FeatureTower",),
    "gru": ("GRUTower",),
    "history_pooling": ("HistoryPoolingTower",),
    "id_tower": ("IdTower", "make_embedding"),
    "lightgcn": ("LightGCNEncoder", "LightGCNItemTower", "LightGCNUserTower", "normalized_adjacency"),
    "sasrec": ("SASRecTower",),
    "sections": ("CANDIDATE_TOWERS", "QUERY_TOWERS", "TowerContext"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
