"""NARM: neural attentive session-based recommendation (Li et al., CIKM'17)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.gru import OUTPUTS
from tfsoft.towers.id_tower import make_embedding


@keras.utils.register_keras_serializable(package="tfsoft")
class NARMTower(keras.layers.Layer):
    """A GRU encoder read twice: its last state (global) and an attention over all its states (local).

    NARM §3.2–3.4: ``h_j = GRU(dropout(e_j))``; global encoder ``c_g = h_t`` (Eq. 5); local
    encoder ``c_l = Σ_{j≤t} α_tj h_j`` with ``α_tj = vᵀ σ(A1 h_t + A2 h_j)`` (Eqs. 6–7: a sigmoid
    inside, no softmax over j, so the weights are not normalised); ``c_t = [c_g; c_l]`` (Eq. 8).
    The bilinear decoder ``S_i = embᵢᵀ B c_t`` (Eq. 9) becomes the query ``q = B · dropout(c_t)``
    ([2H] -> [d], no bias), so scoring stays a dot product with the candidate tower. Dropout
    rates as §4.3: 25 % on the item embeddings, 50 % on ``c_t``. The attention is written out
    because Keras' ``AdditiveAttention`` uses tanh and a softmax.

    Padding (index 0) is masked: the GRU carries its state over padded steps and padded states
    get no attention weight, so left padding changes nothing. ``output="sequence"`` gives the
    query after each position (``c_g = h_t``, attention over ``j ≤ t``): causal.

    Args:
        num_items: rows of the item table (0 = padding/OOV); dim: embedding and output size.
        hidden_units: GRU state size H (CSRec §4.1.4: 128).
        embedding_dropout, dropout: the two dropout rates above.
        output: ``last`` -> [B, d]; ``sequence`` -> [B, L, d].

    Example:
        >>> tower = NARMTower(num_items=50, dim=8, hidden_units=6)
        >>> tower({"history": tf.constant([[0, 3, 4]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, hidden_units: int = 128, embedding_dropout: float = 0.25,
                 dropout: float = 0.5, output: str = "last", l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        self.num_items, self.dim, self.hidden_units = int(num_items), int(dim), int(hidden_units)
        self.embedding_dropout_rate, self.dropout_rate = float(embedding_dropout), float(dropout)
        self.output_mode, self.l2 = output, float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "narm_item_embedding", self.l2)
        self.embedding_dropout = keras.layers.Dropout(self.embedding_dropout_rate)
        self.gru = keras.layers.GRU(self.hidden_units, return_sequences=True, name="gru")
        self.query_transform = keras.layers.Dense(self.hidden_units, use_bias=False, name="a1")
        self.key_transform = keras.layers.Dense(self.hidden_units, use_bias=False, name="a2")
        self.score = keras.layers.Dense(1, use_bias=False, name="v")
        self.context_dropout = keras.layers.Dropout(self.dropout_rate)
        self.projection = keras.layers.Dense(self.dim, use_bias=False, name="b")

    def build(self, input_shape):
        # built here, not on first use: inference over every position calls them inside a loop
        for layer in (self.query_transform, self.key_transform):
            layer.build((None, None, self.hidden_units))
        self.score.build((None, None, None, self.hidden_units))
        super().build(input_shape)

    def call(self, inputs, training=False):
        history = inputs["history"]
        valid = tf.not_equal(history, 0)
        embedded = self.embedding_dropout(self.item_embedding(history), training=training)
        states = self.gru(embedded, mask=valid, training=training)  # [B, L, H]
        if self.output_mode == "last":
            current, allowed = states[:, -1:], valid[:, tf.newaxis, :]  # t = the last position only
            local = self._local(current, states, allowed)
        else:
            length = tf.shape(history)[1]
            causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
            current, allowed = states, causal[tf.newaxis] & valid[:, tf.newaxis, :]
            local = self._local(current, states, allowed) if training else self._local_by_position(states, allowed)
        context = self.context_dropout(tf.concat([current, local], axis=-1), training=training)
        outputs = self.projection(context)
        return outputs[:, -1] if self.output_mode == "last" else outputs

    def _local(self, current, states, allowed):
        """``c_l`` [B, T, H] for the T query states ``current``: ``α[b, t, j] = vᵀ σ(A1 h_t + A2 h_j)``,
        zero where ``allowed`` [B, T, L] is false (j padding or after t). Holds a [B, T, L, H] tensor."""
        pairs = tf.sigmoid(self.query_transform(current)[:, :, tf.newaxis] + self.key_transform(states)[:, tf.newaxis])
        weights = tf.squeeze(self.score(pairs), -1) * tf.cast(allowed, states.dtype)  # [B, T, L]
        return tf.matmul(weights, states)

    def _local_by_position(self, states, allowed):
        """:meth:`_local` for every position, one position at a time: inference over large batches
        (evaluation embeds 2,048 histories at once) holds [B, L, H] instead of [B, L, L, H]."""
        per_position = tf.map_fn(lambda args: self._local(args[0][:, tf.newaxis], states, args[1][:, tf.newaxis])[:, 0],
                                 (tf.transpose(states, [1, 0, 2]), tf.transpose(allowed, [1, 0, 2])),
                                 fn_output_signature=states.dtype)
        return tf.transpose(per_position, [1, 0, 2])

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, hidden_units=self.hidden_units,
                      embedding_dropout=self.embedding_dropout_rate, dropout=self.dropout_rate,
                      output=self.output_mode, l2=self.l2)
        return config
