"""Propagation over the user-item graph: the code LightGCN and NGCF share, and LightGCN
(He et al., SIGIR'20; the SSM paper's best backbone, §4.2). NGCF is :mod:`tfsoft.towers.ngcf`."""

from __future__ import annotations

import threading

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


class _StepCache:
    """The last propagation built by each thread, with the function graph it belongs to.

    A plain object (not a list or dict) so that Keras does not track it as layer state.
    """

    __slots__ = ("entries",)

    def __init__(self):
        self.entries = {}

    def lookup(self, graph, training):
        entry = self.entries.get(threading.get_ident())
        if entry is not None and entry[0] is graph and entry[1] == training:
            return entry[2]
        return None

    def store(self, graph, training, tables):
        self.entries[threading.get_ident()] = (graph, training, tables)


class GraphEncoder(keras.layers.Layer):
    """Ego user and item tables propagated over the training graph, once per traced step.

    Subclasses define :meth:`propagate` (``Ê = f(Â, E^{(0)})``); :class:`LightGCNUserTower`
    (query) and :class:`LightGCNItemTower` (candidate) gather from its output, and at export
    the propagated tables are materialised so serving needs no graph.

    **One propagation per step.** A training step calls the encoder from the query tower, from
    the candidate tower (positives) and again for negatives or the catalog: each call used to
    build its own K sparse products (and their gradients). Inside a traced function (Keras'
    train/test/predict functions) the first call's tables are reused by every later call made
    in the same function graph, thread (MirroredStrategy traces each replica in its own thread)
    and ``training`` mode; gradients flow through the one propagation to every use. Eager calls
    propagate afresh, since the weights may have changed in between. The contract: a traced
    function that changes the embeddings and then calls the towers again sees the propagation
    from before the change, and the first call must be under the ``GradientTape`` when
    gradients are wanted (``TwoTowerModel.train_step`` calls both towers under its tape and
    applies gradients last).

    Args:
        num_users, num_items: table rows (index 0 = OOV on both sides).
        dim: ego embedding size; num_layers: K propagation layers.
        users, items: training edges (user index, item index), one pair per interaction.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int, users, items,
                 l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim, self.num_layers = int(num_users), int(num_items), int(dim), int(num_layers)
        self.adjacency = normalized_adjacency(users, items, self.num_users, self.num_items)
        self.user_embedding = make_embedding(self.num_users, self.dim, f"{self.name}_user_embedding", l2)
        self.item_embedding = make_embedding(self.num_items, self.dim, f"{self.name}_item_embedding", l2)
        self._step_cache = _StepCache()

    def ego(self):
        """``E^{(0)}`` [U + I, d]: the user rows, then the item rows."""
        return tf.concat([self.user_embedding(tf.range(self.num_users)), self.item_embedding(tf.range(self.num_items))], 0)

    def propagate(self, training=False):
        """(users [U, d'], items [I, d']) after K propagation layers."""
        raise NotImplementedError

    def split(self, final):
        """[U + I, d'] -> (users [U, d'], items [I, d'])."""
        return final[: self.num_users], final[self.num_users :]

    def call(self, inputs=None, training=False):
        if tf.executing_eagerly() or not isinstance(training, (bool, type(None))):  # eager, or a symbolic flag
            return self.propagate(training)
        training = bool(training)
        graph = tf.compat.v1.get_default_graph()
        tables = self._step_cache.lookup(graph, training)
        if tables is None:
            tables = self.propagate(training)
            self._step_cache.store(graph, training, tables)
        return tables


class LightGCNEncoder(GraphEncoder):
    """LightGCN propagation (He et al., SIGIR'20, Eqs. 3–4 in matrix form, Eq. 8):

    ``E^{(k+1)} = Â E^{(k)}``, final ``E = (1/(K+1)) Σ_{k=0..K} E^{(k)}`` (layer combination
    1/(K+1), SSM paper §4.1.3). Output size = ``dim``.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int, users, items,
                 l2: float = 0.0, **kwargs):
        kwargs.setdefault("name", "lightgcn")
        super().__init__(num_users, num_items, dim, num_layers, users, items, l2=l2, **kwargs)

    def propagate(self, training=False):
        ego = self.ego()
        total, layer = ego, ego
        for _ in range(self.num_layers):
            layer = tf.sparse.sparse_dense_matmul(self.adjacency, layer)
            total = total + layer
        return self.split(total / float(self.num_layers + 1))


class LightGCNUserTower(keras.layers.Layer):
    """Query tower: the propagated embedding of ``features["user"]`` (any :class:`GraphEncoder`)."""

    def __init__(self, encoder: GraphEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, training=False):
        users, _ = self.encoder(None, training=training)
        return tf.gather(users, inputs["user"])


class LightGCNItemTower(keras.layers.Layer):
    """Candidate tower: the propagated embedding of item ids (any :class:`GraphEncoder`)."""

    def __init__(self, encoder: GraphEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs, training=False):
        _, items = self.encoder(None, training=training)
        return tf.gather(items, inputs)
