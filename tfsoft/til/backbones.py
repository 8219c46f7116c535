"""TIL's backbones evaluated at the look-ahead Θ′ (MF and LightGCN, TIL §5.3).

The outer loss J_out(Θ′) needs the towers' outputs at parameters the towers do not hold. Rather
than copying the model, each backbone names its two tables (users, items) and computes its
outputs from (table, :class:`tfsoft.til.lookahead.Displacement`):

- MF (``id`` query and candidate towers): p′_u = P[u] − Δ_u, q′_i = Q[i] − Δ_i, gathered rows
  only;
- LightGCN: the displaced ego tables propagated as :class:`tfsoft.towers.lightgcn.LightGCNEncoder`
  does, ``E = (1/(K+1)) Σ_k Â^k E⁰`` (the forward materialises every row anyway).

Reads the towers' tables and graph; writes nothing. Other towers are a :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.til.lookahead import Displacement


@dataclass(frozen=True)
class MFBackbone:
    """Matrix factorisation: a user table and an item table, ŷ_ui = p_u·q_i."""

    user_table: tf.Variable
    item_table: tf.Variable
    name = "mf"

    def displaced(self, users: Displacement, items: Displacement) -> tuple[tf.Tensor, tf.Tensor]:
        """(p′ [B, d] of the users, q′ [M, d] of the items) each displacement was built from."""
        return users.gather(self.user_table), items.gather(self.item_table)


@dataclass(frozen=True)
class LightGCNBackbone:
    """LightGCN: ego tables propagated over the normalised user–item graph."""

    user_table: tf.Variable
    item_table: tf.Variable
    adjacency: tf.SparseTensor
    num_layers: int
    name = "lightgcn"

    def propagate(self, users: tf.Tensor, items: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(users, items) after K layers, mean over layers 0..K (LightGCN, He et al. 2020, Eq. 4)."""
        ego = tf.concat([users, items], axis=0)
        total, layer = ego, ego
        for _ in range(self.num_layers):
            layer = tf.sparse.sparse_dense_matmul(tf.cast(self.adjacency, ego.dtype), layer)
            total = total + layer
        final = total / float(self.num_layers + 1)
        count = tf.shape(users)[0]
        return final[:count], final[count:]

    def displaced(self, users: Displacement, items: Displacement) -> tuple[tf.Tensor, tf.Tensor]:
        final_users, final_items = self.propagate(users.dense(self.user_table), items.dense(self.item_table))
        return (tf.gather(final_users, tf.gather(users.rows, users.index)),
                tf.gather(final_items, tf.gather(items.rows, items.index)))


def backbone_of(query_tower, candidate_tower):
    """The TIL backbone of a model's towers; anything but MF or LightGCN is a ConfigError."""
    from tfsoft.towers.id_tower import IdTower
    from tfsoft.towers.lightgcn import LightGCNEncoder, LightGCNItemTower, LightGCNUserTower

    if isinstance(query_tower, LightGCNUserTower) and isinstance(candidate_tower, LightGCNItemTower):
        encoder = query_tower.encoder
        if candidate_tower.encoder is not encoder or not isinstance(encoder, LightGCNEncoder):
            raise ConfigError("til's graph backbone is LightGCN, one encoder shared by both towers; got "
                              f"{type(encoder).__name__}")
        for table in (encoder.user_embedding, encoder.item_embedding):
            if not table.built:
                table.build((None,))
        return LightGCNBackbone(encoder.user_embedding.embeddings, encoder.item_embedding.embeddings,
                                encoder.adjacency, encoder.num_layers)
    if isinstance(query_tower, IdTower) and isinstance(candidate_tower, IdTower):
        if query_tower.hidden_units or candidate_tower.hidden_units:
            raise ConfigError("til's MF backbone is plain embeddings: the id towers must have no hidden_units; "
                              f"got {query_tower.hidden_units} and {candidate_tower.hidden_units}")
        if query_tower.feature != "user":
            raise ConfigError(f"til's MF backbone embeds the user id: the id query tower must read 'user'; "
                              f"got {query_tower.feature!r}")
        for tower in (query_tower, candidate_tower):
            if not tower.embedding.built:
                tower.embedding.build((None,))
        return MFBackbone(query_tower.embedding.embeddings, candidate_tower.embedding.embeddings)
    raise ConfigError("til trains the MF (model.query_tower: id, candidate_tower: id) and LightGCN "
                      "(model.query_tower: lightgcn) backbones of the paper; got query tower "
                      f"{type(query_tower).__name__} and candidate tower {type(candidate_tower).__name__}")
