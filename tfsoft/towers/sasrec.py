"""SASRec self-attentive sequential tower (Kang & McAuley, ICDM'18)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.gru import OUTPUTS
from tfsoft.towers.id_tower import make_embedding


@keras.utils.register_keras_serializable(package="tfsoft")
class SASRecTower(keras.layers.Layer):
    """Causal self-attention blocks over the left-padded history.

    ``h_0 = dropout(LN(E[item] + P[pos]))``; each block:
    ``h = LN(h + dropout(MHA(h, h, causal & key-padding mask)))``,
    ``h = LN(h + dropout(W2·dropout(GELU(W1·h))))``; padded positions are zeroed.
    Positions are counted **from the most recent item** (position 0 = last), so extra left
    padding changes nothing. CSRec settings (§4.1.4): 2 blocks, 2 heads, dropout 0.3, d = 64.

    Args:
        num_items: rows of the item table; dim: model width (= output size);
        max_length: longest history (rows of the position table);
        num_blocks, num_heads, dropout, inner_units (FFN width, default 4·dim);
        output: ``last`` -> [B, d]; ``sequence`` -> [B, L, d] (SASRec trains every position).
    """

    def __init__(self, num_items: int, dim: int, max_length: int, num_blocks: int = 2, num_heads: int = 2,
                 dropout: float = 0.3, inner_units: int | None = None, output: str = "last", l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_items, self.dim, self.max_length = int(num_items), int(dim), int(max_length)
        self.num_blocks, self.num_heads, self.dropout_rate = int(num_blocks), int(num_heads), float(dropout)
        self.inner_units, self.output_mode, self.l2 = int(inner_units or 4 * dim), output, float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "sasrec_item_embedding", self.l2)
        self.position_embedding = keras.layers.Embedding(self.max_length, self.dim, name="position_embedding")
        self.input_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.attention = [keras.layers.MultiHeadAttention(self.num_heads, self.dim // self.num_heads,
                                                          dropout=self.dropout_rate, name=f"attention_{i}")
                          for i in range(self.num_blocks)]
        self.attention_norm = [keras.layers.LayerNormalization(epsilon=1e-6) for _ in range(self.num_blocks)]
        self.inner = [keras.layers.Dense(self.inner_units, activation="gelu") for _ in range(self.num_blocks)]
        self.outer = [keras.layers.Dense(self.dim) for _ in range(self.num_blocks)]
        self.ffn_norm = [keras.layers.LayerNormalization(epsilon=1e-6) for _ in range(self.num_blocks)]

    def call(self, inputs, training=False):
        history = inputs["history"]
        length = tf.shape(history)[1]
        valid = tf.not_equal(history, 0)
        positions = tf.minimum(tf.range(length - 1, -1, -1), self.max_length - 1)  # 0 = most recent
        hidden = self.item_embedding(history) + self.position_embedding(positions)[tf.newaxis]
        hidden = self.dropout(self.input_norm(hidden), training=training)
        keep = tf.cast(valid, hidden.dtype)[..., tf.newaxis]
        hidden *= keep
        causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        attention_mask = causal[tf.newaxis] & valid[:, tf.newaxis, :]
        for block in range(self.num_blocks):
            attended = self.attention[block](hidden, hidden, attention_mask=attention_mask, training=training)
            hidden = self.attention_norm[block](hidden + self.dropout(attended, training=training))
            inner = self.dropout(self.inner[block](hidden), training=training)
            hidden = self.ffn_norm[block](hidden + self.dropout(self.outer[block](inner), training=training))
            hidden *= keep
        return hidden[:, -1] if self.output_mode == "last" else hidden

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, max_length=self.max_length,
                      num_blocks=self.num_blocks, num_heads=self.num_heads, dropout=self.dropout_rate,
                      inner_units=self.inner_units, output=self.output_mode, l2=self.l2)
        return config
