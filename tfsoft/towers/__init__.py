"""Query and candidate encoders. Towers know nothing about losses."""

from tfsoft.towers.history_pooling import HistoryPoolingTower
from tfsoft.towers.id_tower import IdTower, make_embedding

__all__ = ["HistoryPoolingTower", "IdTower", "make_embedding"]
