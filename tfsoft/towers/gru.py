"""GRU4Rec sequential tower (Hidasi et al. ICLR'16; Tan et al. DLRS'16 improvements)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.id_tower import make_embedding

OUTPUTS = ("last", "sequence")


@keras.utils.register_keras_serializable(package="tfsoft")
class GRUTower(keras.layers.Layer):
    """Item embeddings -> dropout -> stacked GRUs over the left-padded history -> projection.

    Padding (index 0) is masked: a masked step carries the previous state, so left padding
    changes nothing and the last position holds the state after the most recent item.
    CSRec settings (§4.1.4, RecBole's GRU4Rec): 2 layers, dropout 0.5, d = 64.

    Args:
        num_items: rows of the item table (0 = padding/OOV).
        dim: output (and embedding) size.
        hidden_units: GRU state size (default ``dim``).
        num_layers: stacked GRUs.
        dropout: on the item embeddings (and between GRU layers).
        output: ``last`` -> [B, d] (the query after the whole history); ``sequence`` ->
            [B, L, d], one query per position (trains every position in one pass).

    Example:
        >>> tower = GRUTower(num_items=50, dim=8)
        >>> tower({"history": tf.constant([[0, 3, 4]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, hidden_units: int | None = None, num_layers: int = 2,
                 dropout: float = 0.5, output: str = "last", l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        self.num_items, self.dim = int(num_items), int(dim)
        self.hidden_units, self.num_layers = int(hidden_units or dim), int(num_layers)
        self.dropout_rate, self.output_mode, self.l2 = float(dropout), output, float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "gru_item_embedding", self.l2)
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.grus = [keras.layers.GRU(self.hidden_units, return_sequences=True, name=f"gru_{i}")
                     for i in range(self.num_layers)]
        self.projection = keras.layers.Dense(self.dim, name="projection")

    def call(self, inputs, training=False):
        history = inputs["history"]
        mask = tf.not_equal(history, 0)
        states = self.dropout(self.item_embedding(history), training=training)
        for index, gru in enumerate(self.grus):
            states = gru(states, mask=mask, training=training)
            if index < len(self.grus) - 1:
                states = self.dropout(states, training=training)
        outputs = self.projection(states)
        return outputs[:, -1] if self.output_mode == "last" else outputs

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, hidden_units=self.hidden_units,
                      num_layers=self.num_layers, dropout=self.dropout_rate, output=self.output_mode, l2=self.l2)
        return config
