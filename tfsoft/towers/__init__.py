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
    "lightgcn": ("GraphEncoder", "LightGCNEncoder", "LightGCNItemTower", "LightGCNUserTower", "normalized_adjacency"),
    "sasrec": ("SASRecTower",),
    "narm": ("NARMTower",),
    "nextitnet": ("NextItNetBlock", "NextItNetTower"),
    "caser": ("CaserTower",),
    "youtube_dnn": ("YoutubeDNNTower",),
    "nfm": ("NFMTower", "bi_interaction"),
    "ngcf": ("NGCFEncoder",),
    "sections": ("CANDIDATE_TOWERS", "QUERY_TOWERS", "TowerContext"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, globals())
