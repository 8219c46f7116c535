"""YoutubeDNN: mean-pooled history through the ReLU MLP by hand; the user's side features."""

import numpy as np
import pandas as pd

from tfsoft.backend import keras, tf
from tfsoft.data import Vocabulary
from tfsoft.data.features import build_feature_table
from tfsoft.towers import YoutubeDNNTower

from tests.towers.test_sequence_towers import HISTORIES, V, make


def test_youtube_dnn_by_hand():
    tower = make("youtube_dnn")
    got = tower(HISTORIES).numpy()
    table = tower.pooling.item_embedding.get_weights()[0]
    hidden = np.stack([table[row[row > 0]].mean(0) for row in HISTORIES["history"].numpy()])
    for layer in tower.mlp:
        kernel, bias = layer.get_weights()
        hidden = np.maximum(hidden @ kernel + bias, 0)
    kernel, bias = tower.projection.get_weights()
    np.testing.assert_allclose(got, hidden @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_youtube_dnn_reads_the_users_side_features():
    users = pd.DataFrame({"user": [1, 2, 3], "age": [20, 30, 40], "country": ["de", "fr", "de"]})
    table = build_feature_table(users, "user", Vocabulary.build([1, 2, 3], name="user"), categorical=("country",),
                                numeric=("age",))
    keras.utils.set_random_seed(0)
    tower = YoutubeDNNTower(V, 8, hidden_units=(16,), user_features=table, feature_dim=4)
    got = tower(HISTORIES).numpy()  # users 1 and 2
    assert got.shape == (2, 8)
    other = tower({"user": tf.constant([3, 2]), "history": HISTORIES["history"]}).numpy()
    assert not np.allclose(other[0], got[0]) and np.allclose(other[1], got[1])
