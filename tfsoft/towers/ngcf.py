"""NGCF graph propagation (Wang et al., SIGIR'19); the graph code it shares with LightGCN is
:class:`tfsoft.towers.lightgcn.GraphEncoder`."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.lightgcn import GraphEncoder


class NGCFEncoder(GraphEncoder):
    """Embedding propagation with feature transforms and the interaction term.

    NGCF §2.2.3, Eq. 7 (matrix form), with ``L = D^{-1/2} A D^{-1/2}`` (:func:`tfsoft.towers.lightgcn.normalized_adjacency`):
    ``E^{(l)} = LeakyReLU((L + I) E^{(l-1)} W1_l + (L E^{(l-1)}) ⊙ E^{(l-1)} W2_l)`` (both
    transforms with a bias, LeakyReLU slope 0.2), message dropout on each layer's output
    (§2.4.2); the final representation concatenates every layer, Eq. 9:
    ``e* = e^{(0)} ‖ e^{(1)} ‖ … ‖ e^{(L)}``, so both towers emit ``(num_layers + 1) · dim``
    numbers and scoring stays their dot product (Eq. 10). Node dropout is not implemented.

    Args:
        num_users, num_items, dim, num_layers, users, items: as :class:`GraphEncoder`.
        dropout: message dropout rate (training only; the paper searches 0.0–0.8, SSM §4.1.3).

    Example:
        >>> import numpy as np
        >>> encoder = NGCFEncoder(3, 4, dim=8, num_layers=2, users=np.array([1, 2]), items=np.array([1, 3]))
        >>> [t.shape for t in encoder(None)]
        [TensorShape([3, 24]), TensorShape([4, 24])]
    """

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int, users, items,
                 dropout: float = 0.1, l2: float = 0.0, **kwargs):
        kwargs.setdefault("name", "ngcf")
        super().__init__(num_users, num_items, dim, num_layers, users, items, l2=l2, **kwargs)
        self.dropout_rate = float(dropout)
        self.sum_transforms = [keras.layers.Dense(self.dim, name=f"w1_{k}") for k in range(self.num_layers)]
        self.interaction_transforms = [keras.layers.Dense(self.dim, name=f"w2_{k}") for k in range(self.num_layers)]
        self.activation = keras.layers.LeakyReLU(alpha=0.2)
        self.dropout = keras.layers.Dropout(self.dropout_rate)

    def propagate(self, training=False):
        hidden = self.ego()
        layers = [hidden]
        for w1, w2 in zip(self.sum_transforms, self.interaction_transforms):
            neighbours = tf.sparse.sparse_dense_matmul(self.adjacency, hidden)  # L E
            hidden = self.activation(w1(neighbours + hidden) + w2(neighbours * hidden))
            hidden = self.dropout(hidden, training=training)
            layers.append(hidden)
        return self.split(tf.concat(layers, axis=-1))
