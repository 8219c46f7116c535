import numpy as np

from tfsoft.backend import keras, tf
from tfsoft.towers import LightGCNEncoder, LightGCNItemTower, LightGCNUserTower, normalized_adjacency


def test_normalized_adjacency_by_hand():
    # users 1,2 ; items 1,2 ; edges (1,1) (1,2) (2,2) and a duplicate (1,1)
    adjacency = tf.sparse.to_dense(normalized_adjacency(np.array([1, 1, 2, 1]), np.array([1, 2, 2, 1]), 3, 3)).numpy()
    degree = {1: 2, 2: 1, 3 + 1: 1, 3 + 2: 2}  # node ids: users 0..2, items 3..5
    expected = np.zeros((6, 6))
    for u, i in [(1, 1), (1, 2), (2, 2)]:
        value = 1 / np.sqrt(degree[u] * degree[3 + i])
        expected[u, 3 + i] = expected[3 + i, u] = value
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)


def test_propagation_matches_numpy_and_towers_gather():
    keras.utils.set_random_seed(0)
    users, items = np.array([1, 1, 2, 3, 3]), np.array([1, 2, 2, 3, 1])
    encoder = LightGCNEncoder(4, 4, 5, num_layers=2, users=users, items=items)
    query, candidate = LightGCNUserTower(encoder), LightGCNItemTower(encoder)
    user_out = query({"user": tf.constant([1, 3])}).numpy()
    item_out = candidate(tf.constant([2])).numpy()
    ego = np.concatenate([encoder.user_embedding.get_weights()[0], encoder.item_embedding.get_weights()[0]])
    a = tf.sparse.to_dense(encoder.adjacency).numpy()
    final = (ego + a @ ego + a @ a @ ego) / 3
    np.testing.assert_allclose(user_out, final[[1, 3]], atol=1e-5)
    np.testing.assert_allclose(item_out, final[[4 + 2]], atol=1e-5)
    # the OOV user/item rows have no edges: they keep 1/(K+1) of their ego embedding
    np.testing.assert_allclose(query({"user": tf.constant([0])}).numpy()[0], ego[0] / 3, atol=1e-6)


def test_lightgcn_saved_model_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = LightGCNEncoder(4, 4, 5, num_layers=1, users=np.array([1, 2]), items=np.array([1, 3]))
    query = LightGCNUserTower(encoder)
    expected = query({"user": tf.constant([1, 2])}).numpy()
    module = tf.Module()
    module.query = query
    module.serve = tf.function(lambda user: query({"user": user}), input_signature=[tf.TensorSpec([None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.serve(tf.constant([1, 2])).numpy(), expected, atol=1e-6)
