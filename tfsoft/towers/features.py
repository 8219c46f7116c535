"""Feature tower: id embedding + side features -> MLP (a production item or user tower)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.data.features import FeatureTable
from tfsoft.towers.id_tower import make_embedding


class FeatureTower(keras.layers.Layer):
    """Embeds ids together with their side features, looked up from a :class:`FeatureTable`.

    ``z = MLP([e_id ; e_cat1 ; ... ; numeric ; mean(e_tokens of each multi-valued feature)])``:
    categorical features get an embedding each, numeric features enter standardised,
    multi-valued features (e.g. genres) are mean-pooled over their non-padding tokens.
    Because features are looked up by id, the whole catalog embeds with one call, and an
    unknown id (index 0) gets the OOV row's "missing" features.

    Args:
        table: features aligned with the id vocabulary.
        dim: output size.
        feature: the input key when called with a dict (``user``); otherwise ids are the input.
        use_id: include a per-id embedding (off = pure content tower, for cold-start items).
        feature_dim: size of each categorical / multi-valued embedding.
        hidden_units: MLP layers before the output projection.
    """

    def __init__(self, table: FeatureTable, dim: int, feature: str = "item", use_id: bool = True,
                 feature_dim: int = 16, hidden_units=(128,), l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.table, self.dim, self.feature, self.use_id = table, int(dim), feature, bool(use_id)
        self.id_embedding = make_embedding(table.num_indices, dim, f"{feature}_id_embedding", l2) if use_id else None
        self.categorical = {name: keras.layers.Embedding(size, feature_dim, name=f"{name}_embedding")
                            for name, size in table.categorical_sizes.items()}
        self.multivalued = {name: keras.layers.Embedding(size, feature_dim, name=f"{name}_embedding")
                            for name, size in table.multivalued_sizes.items()}
        self._categorical_codes = {name: tf.constant(codes) for name, codes in table.categorical.items()}
        self._numeric_values = {name: tf.constant(values) for name, values in table.numeric.items()}
        self._multivalued_codes = {name: tf.constant(codes) for name, codes in table.multivalued.items()}
        self.mlp = [keras.layers.Dense(units, activation="relu") for units in hidden_units]
        self.projection = keras.layers.Dense(self.dim)

    def call(self, inputs, training=False):
        ids = inputs[self.feature] if isinstance(inputs, dict) else inputs
        ids = tf.cast(ids, tf.int64)
        parts = [self.id_embedding(ids)] if self.id_embedding is not None else []
        for name, layer in self.categorical.items():
            parts.append(layer(tf.gather(self._categorical_codes[name], ids)))
        for name, values in self._numeric_values.items():
            parts.append(tf.gather(values, ids)[..., tf.newaxis])
        for name, layer in self.multivalued.items():
            codes = tf.gather(self._multivalued_codes[name], ids)  # [..., T]
            mask = tf.cast(tf.not_equal(codes, 0), tf.float32)[..., tf.newaxis]
            pooled = tf.math.divide_no_nan(tf.reduce_sum(layer(codes) * mask, axis=-2), tf.reduce_sum(mask, axis=-2))
            parts.append(pooled)
        if not parts:
            raise ValueError("FeatureTower has neither an id embedding nor features")
        output = tf.concat(parts, axis=-1)
        for layer in self.mlp:
            output = layer(output)
        return self.projection(output)
