"""The triplet weight generator f(s_uij; Λ) (TIL, Eq. 3).

``z = relu(W1·s + b1)``, ``w = act(W2·z + b2)``, with W1 ∈ ℝ^{h×2d}, h = 64 (the paper's h = d = 64;
the authors' code fixes 64). ``act`` is the paper's ``sigmoid`` (weights in (0, 1)) or the
authors' code's ``softplus`` (weights in (0, ∞); the code also drops b2, kept here).
"""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError

ACTIVATIONS = ("sigmoid", "softplus")


class WeightGenerator(keras.layers.Layer):
    """Λ: states [..., 2d] -> weights [...] (TIL Eq. 3).

    The variables are created at construction (the input size is known), so a model holding
    the generator loads its ``*.weights.h5`` before any step has run.

    Example:
        >>> generator = WeightGenerator(state_dim=8, hidden_units=4)
        >>> generator(tf.zeros([3, 2, 8])).shape
        TensorShape([3, 2])

    Args:
        state_dim: 2d, the size of s_uij.
        hidden_units: h, the hidden layer's width.
        activation: ``sigmoid`` (paper) or ``softplus`` (authors' code).
    """

    def __init__(self, state_dim: int, hidden_units: int = 64, activation: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"weight_activation must be one of {ACTIVATIONS}; got {activation!r}")
        self.state_dim, self.hidden_units, self.activation = int(state_dim), int(hidden_units), activation
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu", kernel_initializer="glorot_uniform",
                                         name="hidden")
        self.output_layer = keras.layers.Dense(1, kernel_initializer="glorot_uniform", name="weight")
        self.hidden.build((None, self.state_dim))
        self.output_layer.build((None, self.hidden_units))
        self.built = True

    def call(self, states):
        if states.shape[-1] is not None and states.shape[-1] != self.state_dim:
            raise ConfigError(f"the weight generator takes states of size {self.state_dim}; got shape {states.shape}")
        logits = tf.squeeze(self.output_layer(self.hidden(states)), axis=-1)
        return tf.math.sigmoid(logits) if self.activation == "sigmoid" else tf.math.softplus(logits)

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, hidden_units=self.hidden_units, activation=self.activation)
        return config


def normalise_to_batch_mean(weights: tf.Tensor, coefficient: tf.Tensor) -> tf.Tensor:
    """``w / mean(w)`` over a batch's valid triplets (the authors' code's ``trick: norm``).

    The look-ahead rewards larger steps: on the batch the outer loss is measured on, raising
    every weight lowers J_out(Θ′), so the raw weights drift up together (to 1 under the sigmoid)
    and under Adam a common scale changes nothing. Dividing by the batch mean leaves the
    generator only the relative weights to learn. Differentiable (the mean included).

    Args:
        weights: [B, N]; coefficient: [B, N] the per-example averaging coefficients (0 on masked
            triplets, each valid row summing to 1).
    """
    mean = tf.math.divide_no_nan(tf.reduce_sum(coefficient * weights), tf.reduce_sum(coefficient))
    return tf.math.divide_no_nan(weights, mean)
