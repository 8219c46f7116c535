"""NextItNet: dilated causal convolutions over the item sequence (Yuan et al., WSDM'19)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.towers.gru import OUTPUTS
from tfsoft.towers.id_tower import make_embedding


@keras.utils.register_keras_serializable(package="tfsoft")
class NextItNetBlock(keras.layers.Layer):
    """One residual block of NextItNet (§3.4, Fig. 3b): two dilated causal convolutions.

    ``y = x + ReLU(LN(conv_r(ReLU(LN(conv_r(x))))))``, ``conv_r`` a causal 1-D convolution of
    width ``kernel_size`` and dilation ``r`` over the sequence axis with ``dim`` channels.
    Padded positions (``keep`` = 0) are zeroed between the convolutions and at the output,
    so they read as the zeros a causal convolution pads with.

    Args:
        dim: channels; dilation: r; kernel_size: convolution width.
    """

    def __init__(self, dim: int, dilation: int, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.dilation, self.kernel_size = int(dim), int(dilation), int(kernel_size)
        self.first = keras.layers.Conv1D(self.dim, self.kernel_size, padding="causal", dilation_rate=self.dilation)
        self.second = keras.layers.Conv1D(self.dim, self.kernel_size, padding="causal", dilation_rate=self.dilation)
        self.first_norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.second_norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, inputs, keep):
        inner = tf.nn.relu(self.first_norm(self.first(inputs))) * keep
        inner = tf.nn.relu(self.second_norm(self.second(inner)))
        return (inputs + inner) * keep

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, dilation=self.dilation, kernel_size=self.kernel_size)
        return config


@keras.utils.register_keras_serializable(package="tfsoft")
class NextItNetTower(keras.layers.Layer):
    """Stacked residual blocks of dilated causal convolutions; a query per position.

    NextItNet §3: ``h_0 = dropout(E[item])``, then one :class:`NextItNetBlock` per dilation of
    ``dilations × num_repeats`` (§3.3: 1, 2, 4, 8 doubles the receptive field per block; the
    stack is repeated), the output at position t is the query for item t + 1 (the softmax
    over items of §3.5 is the retrieval loss here). With kernel 3 one repeat of (1, 2, 4, 8)
    sees 61 positions. No position reads a later one, so ``output="sequence"`` is causal,
    and padded positions are zeros, so left padding changes nothing.

    Args:
        num_items: rows of the item table; dim: embedding size = channels = output size.
        dilations, num_repeats: the dilation of each block, the stack repeated ``num_repeats`` times.
        kernel_size: convolution width (3, as CSRec §4.1.4).
        dropout: on the item embeddings (the paper uses none).
        output: ``last`` -> [B, d]; ``sequence`` -> [B, L, d].

    Example:
        >>> tower = NextItNetTower(num_items=50, dim=8, dilations=(1, 2))
        >>> tower({"history": tf.constant([[0, 3, 4]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, dilations=(1, 2, 4, 8), num_repeats: int = 1, kernel_size: int = 3,
                 dropout: float = 0.0, output: str = "last", l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        self.num_items, self.dim, self.dilations = int(num_items), int(dim), tuple(int(r) for r in dilations)
        self.num_repeats, self.kernel_size, self.dropout_rate = int(num_repeats), int(kernel_size), float(dropout)
        self.output_mode, self.l2 = output, float(l2)
        self.item_embedding = item_embedding or make_embedding(self.num_items, self.dim, "nextitnet_item_embedding",
                                                               self.l2)
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.blocks = [NextItNetBlock(self.dim, rate, self.kernel_size, name=f"block_{index}")
                       for index, rate in enumerate(self.dilations * self.num_repeats)]

    def call(self, inputs, training=False):
        history = inputs["history"]
        keep = tf.cast(tf.not_equal(history, 0), tf.float32)[..., tf.newaxis]
        hidden = self.dropout(self.item_embedding(history), training=training) * keep
        for block in self.blocks:
            hidden = block(hidden, keep)
        return hidden[:, -1] if self.output_mode == "last" else hidden

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, dilations=list(self.dilations),
                      num_repeats=self.num_repeats, kernel_size=self.kernel_size, dropout=self.dropout_rate,
                      output=self.output_mode, l2=self.l2)
        return config
