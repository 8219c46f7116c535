"""History pooling tower (SVD++-style; SSM paper §4.4.6, Koren KDD'08)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.id_tower import make_embedding


@keras.utils.register_keras_serializable(package="tfsoft")
class HistoryPoolingTower(keras.layers.Layer):
    """Query = α0-scaled user embedding + normalised sum of the history items' embeddings.

    ``z_u = |H_u|^{-α0}·e_u·[use_user] + |H_u|^{-α1} Σ_{j∈H_u} e_j``, pad (index 0) masked.
    α1 = 1 is mean pooling, α1 = 0.5 the SVD++ normalisation, α1 = 0 the plain sum; the SSM
    paper searches the normalisation in {0, 0.5, 1}. A user with an empty history gets the
    user term only (zeros without it).

    Args:
        num_items: rows of the item table (items + OOV/padding row 0).
        dim: embedding size.
        num_users: rows of the user table; 0 = no user embedding (pure history model).
        history_exponent: α1.
        user_exponent: α0 (0 = unscaled user embedding).
        item_embedding: share this table with the candidate tower (tied embeddings).
    """

    def __init__(self, num_items: int, dim: int, num_users: int = 0, history_exponent: float = 1.0,
                 user_exponent: float = 0.0, l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.num_users = int(num_items), int(dim), int(num_users)
        self.history_exponent, self.user_exponent, self.l2 = float(history_exponent), float(user_exponent), float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "history_item_embedding", self.l2)
        self.user_embedding = make_embedding(self.num_users, self.dim, "user_embedding", self.l2) if self.num_users else None

    def call(self, inputs, training=False):
        history = inputs["history"]
        mask = tf.cast(tf.not_equal(history, 0), tf.float32)[..., tf.newaxis]
        count = tf.reduce_sum(mask, axis=-2)  # [B, 1]
        pooled = tf.reduce_sum(self.item_embedding(history) * mask, axis=-2)
        pooled = pooled * tf.math.divide_no_nan(1.0, tf.pow(count, self.history_exponent))
        if self.user_embedding is None:
            return pooled
        user = self.user_embedding(inputs["user"])
        if self.user_exponent:
            user = user * tf.math.divide_no_nan(1.0, tf.pow(tf.maximum(count, 1.0), self.user_exponent))
        return pooled + user

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, num_users=self.num_users,
                      history_exponent=self.history_exponent, user_exponent=self.user_exponent, l2=self.l2)
        return config
