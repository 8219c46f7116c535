"""NFM: neural factorization machine as a query tower (He & Chua, SIGIR'17)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.id_tower import make_embedding


def bi_interaction(embeddings, weights):
    """Bi-interaction pooling (NFM §3.1, Eq. 4): ``½[(Σ_i x_i v_i)² − Σ_i (x_i v_i)²]``, element-wise.

    The sum of every pairwise product ``x_i v_i ⊙ x_j v_j`` (i < j) in linear time.

    Args:
        embeddings: [..., N, d] feature embeddings v_i.
        weights: [..., N] feature values x_i (0 drops a feature).

    Returns:
        [..., d].
    """
    weighted = embeddings * weights[..., tf.newaxis]
    return 0.5 * (tf.square(tf.reduce_sum(weighted, axis=-2)) - tf.reduce_sum(tf.square(weighted), axis=-2))


@keras.utils.register_keras_serializable(package="tfsoft")
class NFMTower(keras.layers.Layer):
    """Bi-interaction pooling of the history (and user) embeddings, then an MLP.

    NFM §3.1 (Eqs. 3–5): the features are the history items with ``x_j = |H|^{-α}`` (the
    implicit-feedback encoding of SVD++ in an FM; α = ``history_exponent``, padding has x = 0)
    and, optionally, the user id with ``x_u = 1``; ``f_BI = bi_interaction(v, x)``, dropout
    (§3.3), then ``hidden_units`` ReLU layers ``z_l = ReLU(W_l z_{l-1} + b_l)``. NFM's output
    ``hᵀ z_L`` over features that include the candidate item becomes the query ``q = W z_L``
    here, scored against the candidate tower by a dot product (the two-tower form: the
    candidate is not a feature of the pooling, and the linear terms ``w_0 + Σ w_i x_i`` do not
    change a user's ranking without an item bias). Batch normalisation (§3.3) is left out.

    Args:
        num_items: rows of the item table; dim: embedding and output size.
        hidden_units: the ReLU layers (§4.3: one hidden layer works best).
        dropout: on the bi-interaction output and after each ReLU layer (training only).
        num_users: rows of the user table; 0 = no user feature (input ``history`` only).
        history_exponent: α.

    Example:
        >>> tower = NFMTower(num_items=50, dim=8, hidden_units=(16,))
        >>> tower({"history": tf.constant([[0, 3, 4]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, hidden_units=(64,), dropout: float = 0.3, num_users: int = 0,
                 history_exponent: float = 1.0, l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.hidden_units = int(num_items), int(dim), tuple(int(u) for u in hidden_units)
        self.dropout_rate, self.num_users = float(dropout), int(num_users)
        self.history_exponent, self.l2 = float(history_exponent), float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "nfm_item_embedding", self.l2)
        self.user_embedding = (make_embedding(self.num_users, self.dim, "nfm_user_embedding", self.l2)
                               if self.num_users else None)
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.mlp = [keras.layers.Dense(units, activation="relu", name=f"relu_{i}")
                    for i, units in enumerate(self.hidden_units)]
        self.projection = keras.layers.Dense(self.dim, name="projection")

    def call(self, inputs, training=False):
        history = inputs["history"]
        mask = tf.cast(tf.not_equal(history, 0), tf.float32)
        count = tf.reduce_sum(mask, axis=-1, keepdims=True)
        weights = mask * tf.math.divide_no_nan(1.0, tf.pow(count, self.history_exponent))
        embeddings = self.item_embedding(history)
        if self.user_embedding is not None:
            embeddings = tf.concat([self.user_embedding(inputs["user"])[:, tf.newaxis], embeddings], axis=1)
            weights = tf.concat([tf.ones_like(count), weights], axis=1)
        hidden = self.dropout(bi_interaction(embeddings, weights), training=training)
        for layer in self.mlp:
            hidden = self.dropout(layer(hidden), training=training)
        return self.projection(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, hidden_units=list(self.hidden_units),
                      dropout=self.dropout_rate, num_users=self.num_users, history_exponent=self.history_exponent,
                      l2=self.l2)
        return config
