"""LightGCN graph propagation (He et al., SIGIR'20; the SSM paper's best backbone, §4.2)."""

from __future__ import annotations

import numpy as np

from tfsoft.backend import keras, tf
from tfsoft.towers.id_tower import make_embedding


def normalized_adjacency(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> tf.SparseTensor:
    """Symmetric normalised bipartite adjacency ``Â = D^{-1/2} A D^{-1/2}`` over
    ``num_users + num_items`` nodes (users first). Duplicate edges count once; index 0 of
    either side (OOV/padding) has no edges.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    keep = (users > 0) & (items > 0)
    pairs = np.unique(np.stack([users[keep], items[keep]], axis=1), axis=0)
    rows = np.concatenate([pairs[:, 0], num_users + pairs[:, 1]])
    cols = np.concatenate([num_users + pairs[:, 1], pairs[:, 0]])
    degree = np.bincount(rows, minlength=num_users + num_items).astype(np.float64)
    values = 1.0 / np.sqrt(degree[rows] * degree[cols])
    order = np.lexsort((cols, rows))
    return tf.SparseTensor(indices=np.stack([rows[order], cols[order]], axis=1), values=values[order].astype(np.float32),
                           dense_shape=[num_users + num_items, num_users + num_items])


class LightGCNEncoder(keras.layers.Layer):
    """Propagates user and item embeddings over the training graph.

    ``E^{(k+1)} = Â E^{(k)}``, final ``E = (1/(K+1)) Σ_{k=0..K} E^{(k)}`` (layer combination
    1/(K+1), SSM paper §4.1.3). Shared by :class:`LightGCNUserTower` (query) and
    :class:`LightGCNItemTower` (candidate); at export the propagated tables are materialised
    with :meth:`propagate` so serving needs no graph.

    Args:
        num_users, num_items: table rows (index 0 = OOV on both sides).
        dim: embedding size; num_layers: K (the SSM paper searches 1..4).
        users, items: training edges (user index, item index), one pair per interaction.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int, users, items,
                 l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim, self.num_layers = int(num_users), int(num_items), int(dim), int(num_layers)
        self.adjacency = normalized_adjacency(users, items, self.num_users, self.num_items)
        self.user_embedding = make_embedding(self.num_users, self.dim, "lightgcn_user_embedding", l2)
        self.item_embedding = make_embedding(self.num_items, self.dim, "lightgcn_item_embedding", l2)

    def propagate(self):
        """(users [U, d], items [I, d]) after K propagation layers."""
        ego = tf.concat([self.user_embedding(tf.range(self.num_users)), self.item_embedding(tf.range(self.num_items))], 0)
        total, layer = ego, ego
        for _ in range(self.num_layers):
            layer = tf.sparse.sparse_dense_matmul(self.adjacency, layer)
            total = total + layer
        final = total / float(self.num_layers + 1)
        return final[: self.num_users], final[self.num_users :]

    def call(self, inputs=None):
        return self.propagate()


class LightGCNUserTower(keras.layers.Layer):
    """Query tower: the propagated embedding of ``features["user"]``."""

    def __init__(self, encoder: LightGCNEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, training=False):
        users, _ = self.encoder(None)
        return tf.gather(users, inputs["user"])


class LightGCNItemTower(keras.layers.Layer):
    """Candidate tower: the propagated embedding of item ids."""

    def __init__(self, encoder: LightGCNEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, training=False):
        _, items = self.encoder(None)
        return tf.gather(items, inputs)
