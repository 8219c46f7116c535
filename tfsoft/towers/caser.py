"""Caser: convolutional sequence embedding (Tang & Wang, WSDM'18)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.id_tower import make_embedding


@keras.utils.register_keras_serializable(package="tfsoft")
class CaserTower(keras.layers.Layer):
    """Horizontal and vertical convolutions over the embeddings of the last L items.

    Caser §3.2–3.3, on ``E`` = the [L, d] embeddings of the L most recent items (fewer items:
    zero rows in front):

    * horizontal filters of every height h = 1..L (``num_horizontal`` each), ReLU, max-pooled
      over the positions: ``o = [max(c^1), …, max(c^{n_h})]`` per height, ``L · n_h`` numbers
      (union-level and point-level sequential patterns);
    * vertical filters ``F̃ ∈ R^{L×1}``: ``õ = Σ_l F̃_l · E_l``, a learned weighted sum of the
      rows (``num_vertical`` of them), ``d · n_v`` numbers;
    * ``z = ReLU(W [dropout(o; õ)] + b)`` ∈ R^d (Eq. 8; dropout 0.5 as §4.2).

    The paper scores ``y_i = W'_i [z; P_u] + b'_i`` (Eq. 9) with a per-user embedding ``P_u``;
    here ``q = M [z; P_u]`` (or ``M z`` without the user embedding), so that ``W'_i = M^T c_i``
    with the candidate tower's ``c_i`` and scoring stays a dot product (no item bias ``b'_i``).
    Only the last L items are read, so more left padding changes nothing. One query per
    example (``last``): a query per position would need a window per position.

    Args:
        num_items: rows of the item table; dim: embedding and output size.
        max_length: L (5, as §4.2).
        num_horizontal, num_vertical: n_h filters per height (16) and n_v vertical filters (4).
        dropout: before the fully connected layer.
        num_users: rows of the user table; 0 = no user embedding (input ``history`` only).

    Example:
        >>> tower = CaserTower(num_items=50, dim=8, max_length=3)
        >>> tower({"history": tf.constant([[0, 3, 4, 5]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, max_length: int = 5, num_horizontal: int = 16, num_vertical: int = 4,
                 dropout: float = 0.5, num_users: int = 0, l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.max_length = int(num_items), int(dim), int(max_length)
        self.num_horizontal, self.num_vertical, self.dropout_rate = int(num_horizontal), int(num_vertical), float(dropout)
        self.num_users, self.l2 = int(num_users), float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "caser_item_embedding", self.l2)
        self.user_embedding = (make_embedding(self.num_users, self.dim, "caser_user_embedding", self.l2)
                               if self.num_users else None)
        self.horizontal = [keras.layers.Conv1D(self.num_horizontal, height, activation="relu", name=f"horizontal_{height}")
                           for height in range(1, self.max_length + 1)]
        self.pool = keras.layers.GlobalMaxPooling1D()
        self.vertical = keras.layers.Dense(self.num_vertical, name="vertical")  # over the L rows of each column
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.hidden = keras.layers.Dense(self.dim, activation="relu", name="hidden")
        self.projection = keras.layers.Dense(self.dim, name="projection")

    def call(self, inputs, training=False):
        history = inputs["history"][:, -self.max_length:]
        missing = tf.maximum(self.max_length - tf.shape(history)[1], 0)
        history = tf.reshape(tf.pad(history, [[0, 0], [missing, 0]]), [-1, self.max_length])
        keep = tf.cast(tf.not_equal(history, 0), tf.float32)[..., tf.newaxis]
        embedded = self.item_embedding(history) * keep  # [B, L, d], padding rows zero
        horizontal = tf.concat([self.pool(conv(embedded)) for conv in self.horizontal], axis=-1)  # [B, L·n_h]
        vertical = self.vertical(tf.transpose(embedded, [0, 2, 1]))  # [B, d, n_v]
        vertical = tf.reshape(vertical, [-1, self.dim * self.num_vertical])
        hidden = self.hidden(self.dropout(tf.concat([horizontal, vertical], axis=-1), training=training))
        if self.user_embedding is not None:
            hidden = tf.concat([hidden, self.user_embedding(inputs["user"])], axis=-1)
        return self.projection(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, max_length=self.max_length,
                      num_horizontal=self.num_horizontal, num_vertical=self.num_vertical, dropout=self.dropout_rate,
                      num_users=self.num_users, l2=self.l2)
        return config
