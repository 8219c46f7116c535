"""Query and candidate encoders. Towers know nothing about losses."""

from tfsoft.towers.features import FeatureTower
from tfsoft.towers.gru import GRUTower
from tfsoft.towers.history_pooling import HistoryPoolingTower
from tfsoft.towers.id_tower import IdTower, make_embedding
from tfsoft.towers.lightgcn import LightGCNEncoder, LightGCNItemTower, LightGCNUserTower, normalized_adjacency
from tfsoft.towers.sasrec import SASRecTower

__all__ = [
    "FeatureTower", "GRUTower", "HistoryPoolingTower", "IdTower", "LightGCNEncoder", "LightGCNItemTower", "LightGCNUserTower",
    "SASRecTower", "make_embedding", "normalized_adjacency",
]
