"""YoutubeDNN candidate generation as a query tower (Covington et al., RecSys'16)."""

from __future__ import annotations

from tfsoft.backend import keras, tf
from tfsoft.data.features import FeatureTable
from tfsoft.towers.features import FeatureTower
from tfsoft.towers.history_pooling import HistoryPoolingTower


@keras.utils.register_keras_serializable(package="tfsoft")
class YoutubeDNNTower(keras.layers.Layer):
    """Mean-pooled history (and the user's side features) through a ReLU MLP.

    Covington et al. §3.3–3.4 (Fig. 3): the watch history, a variable-length bag of sparse ids,
    is averaged into one dense vector (``mean_{j∈H} e_j``, padding masked — the
    :class:`HistoryPoolingTower` with α1 = 1); side features (geography, age, gender: here the
    user's ``data.user_features`` through a :class:`FeatureTower` without an id embedding) are
    concatenated; ``hidden_units`` fully connected ReLU layers follow (the paper's tower, e.g.
    1024 → 512 → 256). The paper takes the last ReLU layer as the user vector u; a linear
    output layer of size ``dim`` follows it here, so that u is not confined to the non-negative
    orthant under cosine scoring. Scores are ``u · v_j`` with the candidate tower's v_j (the
    softmax's output embeddings, §3.1).

    Args:
        num_items: rows of the item table; dim: embedding and output size.
        hidden_units: the ReLU layers; dropout: after each of them (training only).
        user_features: the user side-feature table, or None (input ``history`` only).
        feature_dim: size of each side-feature embedding.

    Example:
        >>> tower = YoutubeDNNTower(num_items=50, dim=8, hidden_units=(16,))
        >>> tower({"history": tf.constant([[0, 3, 4]])}).shape
        TensorShape([1, 8])
    """

    def __init__(self, num_items: int, dim: int, hidden_units=(256, 128), dropout: float = 0.0,
                 user_features: FeatureTable | None = None, feature_dim: int = 16, l2: float = 0.0,
                 item_embedding: "keras.layers.Embedding | None" = None, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.hidden_units = int(num_items), int(dim), tuple(int(u) for u in hidden_units)
        self.dropout_rate, self.feature_dim, self.l2 = float(dropout), int(feature_dim), float(l2)
        self.pooling = HistoryPoolingTower(self.num_items, self.dim, history_exponent=1.0, l2=self.l2,
                                           item_embedding=item_embedding, name="history_pooling")
        self.side_features = (FeatureTower(user_features, self.dim, feature="user", use_id=False,
                                           feature_dim=self.feature_dim, hidden_units=(), name="side_features")
                              if user_features is not None else None)
        self.mlp = [keras.layers.Dense(units, activation="relu", name=f"relu_{i}")
                    for i, units in enumerate(self.hidden_units)]
        self.dropout = keras.layers.Dropout(self.dropout_rate)
        self.projection = keras.layers.Dense(self.dim, name="projection")

    def call(self, inputs, training=False):
        hidden = self.pooling({"history": inputs["history"]})
        if self.side_features is not None:
            hidden = tf.concat([hidden, self.side_features(inputs["user"])], axis=-1)
        for layer in self.mlp:
            hidden = self.dropout(layer(hidden), training=training)
        return self.projection(hidden)

    def get_config(self):
        if self.side_features is not None:
            raise NotImplementedError("a YoutubeDNNTower with side features is rebuilt from its config section "
                                      "(the feature table is data), not from get_config")
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim, hidden_units=list(self.hidden_units),
                      dropout=self.dropout_rate, feature_dim=self.feature_dim, l2=self.l2)
        return config
