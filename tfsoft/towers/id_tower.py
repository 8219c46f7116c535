"""ID tower: an embedding row per id, optionally followed by an MLP (the MF backbone)."""

from __future__ import annotations

from tfsoft.backend import keras, tf


def make_embedding(num_indices: int, dim: int, name: str, l2: float = 0.0) -> "keras.layers.Embedding":
    """An embedding table with Glorot (Xavier) initialisation, as in the SSM paper §4.1.3."""
    return keras.layers.Embedding(
        num_indices, dim, embeddings_initializer="glorot_uniform",
        embeddings_regularizer=keras.regularizers.l2(l2) if l2 else None, name=name,
    )


@keras.utils.register_keras_serializable(package="tfsoft")
class IdTower(keras.layers.Layer):
    """Embeds an id (user or item index; 0 = OOV row) into ``dim`` dimensions.

    As a query tower it reads ``features[feature]``; as a candidate tower it is called with
    item ids directly.

    Example:
        >>> tower = IdTower(num_indices=10, dim=4, feature="user")
        >>> tower({"user": tf.constant([1, 2])}).shape
        TensorShape([2, 4])
    """

    def __init__(self, num_indices: int, dim: int, feature: str = "item", hidden_units=(), l2: float = 0.0,
                 embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        self.num_indices, self.dim, self.feature = int(num_indices), int(dim), feature
        self.hidden_units, self.l2 = tuple(hidden_units), float(l2)
        self.embedding = embedding or make_embedding(self.num_indices, self.dim, f"{feature}_embedding", self.l2)
        self.mlp = [keras.layers.Dense(units, activation="relu") for units in self.hidden_units]
        self.projection = keras.layers.Dense(self.dim) if self.hidden_units else None

    def call(self, inputs, training=False):
        ids = inputs[self.feature] if isinstance(inputs, dict) else inputs
        output = self.embedding(ids)
        for layer in self.mlp:
            output = layer(output)
        return self.projection(output) if self.projection is not None else output

    def get_config(self):
        config = super().get_config()
        config.update(num_indices=self.num_indices, dim=self.dim, feature=self.feature,
                      hidden_units=list(self.hidden_units), l2=self.l2)
        return config
