"""Graph towers: adjacency, LightGCN and NGCF propagation against NumPy, one propagation per
traced step, SavedModel round trip."""

import numpy as np
import pytest

from tfsoft.backend import keras, tf
from tfsoft.towers import LightGCNEncoder, LightGCNItemTower, LightGCNUserTower, NGCFEncoder, normalized_adjacency

USERS, ITEMS = np.array([1, 1, 2, 3, 3]), np.array([1, 2, 2, 3, 1])
ENCODERS = {"lightgcn": lambda **keys: LightGCNEncoder(4, 4, 5, users=USERS, items=ITEMS, **keys),
            "ngcf": lambda **keys: NGCFEncoder(4, 4, 5, users=USERS, items=ITEMS, dropout=0.5, **keys)}


def test_normalized_adjacency_by_hand():
    # users 1,2 ; items 1,2 ; edges (1,1) (1,2) (2,2) and a duplicate (1,1)
    adjacency = tf.sparse.to_dense(normalized_adjacency(np.array([1, 1, 2, 1]), np.array([1, 2, 2, 1]), 3, 3)).numpy()
    degree = {1: 2, 2: 1, 3 + 1: 1, 3 + 2: 2}  # node ids: users 0..2, items 3..5
    expected = np.zeros((6, 6))
    for u, i in [(1, 1), (1, 2), (2, 2)]:
        value = 1 / np.sqrt(degree[u] * degree[3 + i])
        expected[u, 3 + i] = expected[3 + i, u] = value
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)


def propagate_small_graph(kind, num_layers=2):
    """(encoder, query tower, its output for users 1 and 3, the candidate tower's for item 2,
    E^(0) [U + I, d], dense Â) on the small graph of :data:`ENCODERS`."""
    keras.utils.set_random_seed(0)
    encoder = ENCODERS[kind](num_layers=num_layers)
    query, candidate = LightGCNUserTower(encoder), LightGCNItemTower(encoder)
    user_out = query({"user": tf.constant([1, 3])}).numpy()
    item_out = candidate(tf.constant([2])).numpy()
    ego = np.concatenate([encoder.user_embedding.get_weights()[0], encoder.item_embedding.get_weights()[0]])
    return encoder, query, user_out, item_out, ego, tf.sparse.to_dense(encoder.adjacency).numpy()


def test_propagation_matches_numpy_and_towers_gather():
    _, query, user_out, item_out, ego, a = propagate_small_graph("lightgcn")
    final = (ego + a @ ego + a @ a @ ego) / 3
    np.testing.assert_allclose(user_out, final[[1, 3]], atol=1e-5)
    np.testing.assert_allclose(item_out, final[[4 + 2]], atol=1e-5)
    # the OOV user/item rows have no edges: they keep 1/(K+1) of their ego embedding
    np.testing.assert_allclose(query({"user": tf.constant([0])}).numpy()[0], ego[0] / 3, atol=1e-6)


def test_ngcf_propagation_matches_numpy_and_drops_messages_only_in_training():
    encoder, query, user_out, item_out, hidden, a = propagate_small_graph("ngcf")
    layers = [hidden]
    for w1, w2 in zip(encoder.sum_transforms, encoder.interaction_transforms):
        (k1, b1), (k2, b2) = w1.get_weights(), w2.get_weights()
        neighbours = a @ hidden  # L E
        z = (neighbours + hidden) @ k1 + b1 + (neighbours * hidden) @ k2 + b2  # (L + I) E W1 + (L E) ⊙ E W2
        hidden = np.where(z > 0, z, 0.2 * z)
        layers.append(hidden)
    final = np.concatenate(layers, axis=1)  # e^(0) ‖ e^(1) ‖ e^(2)
    assert final.shape == (8, 15)
    np.testing.assert_allclose(user_out, final[[1, 3]], atol=1e-5)
    np.testing.assert_allclose(item_out, final[[4 + 2]], atol=1e-5)
    np.testing.assert_array_equal(query({"user": tf.constant([1, 3])}).numpy(), user_out)
    assert not np.allclose(query({"user": tf.constant([1, 3])}, training=True).numpy(), user_out)


@pytest.mark.parametrize("kind", list(ENCODERS))
def test_one_propagation_per_traced_step_with_the_same_gradients(kind):
    """Query and candidate towers in one traced function share one propagation (K sparse
    products, not 2K); values and gradients equal eager calls, which propagate every time."""
    keras.utils.set_random_seed(0)
    encoder = ENCODERS[kind](num_layers=3)
    query, candidate = LightGCNUserTower(encoder), LightGCNItemTower(encoder)
    users, items = tf.constant([1, 2, 3]), tf.constant([2, 1, 3])

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(query({"user": users}) * candidate(items)) + tf.reduce_sum(candidate(tf.range(4)))
        return loss, tape.gradient(loss, encoder.trainable_variables)

    eager_loss, eager_gradients = step()
    traced = tf.function(step)
    loss, gradients = traced()
    np.testing.assert_allclose(loss.numpy(), eager_loss.numpy(), rtol=1e-5)
    for got, want in zip(gradients, eager_gradients):
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), atol=1e-5)
    forward = tf.function(lambda: (query({"user": users}), candidate(items), candidate(tf.range(4))))
    operations = [op.type for op in forward.get_concrete_function().graph.get_operations()]
    assert operations.count("SparseTensorDenseMatMul") == 3


@pytest.mark.parametrize("kind", list(ENCODERS))
def test_graph_tower_saved_model_round_trip(tmp_path, kind):
    keras.utils.set_random_seed(0)
    encoder = ENCODERS[kind](num_layers=1)
    query = LightGCNUserTower(encoder)
    expected = query({"user": tf.constant([1, 2])}).numpy()
    module = tf.Module()
    module.query = query
    module.serve = tf.function(lambda user: query({"user": user}), input_signature=[tf.TensorSpec([None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.serve(tf.constant([1, 2])).numpy(), expected, atol=1e-6)


MIRRORED_SCRIPT = """
import json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
from tfsoft.backend import keras, tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from tfsoft import losses
from tfsoft.model import TwoTowerModel
from tfsoft.towers import LightGCNItemTower, LightGCNUserTower, NGCFEncoder

rng = np.random.default_rng(0)
edges, data = (rng.integers(1, 20, 100), rng.integers(1, 30, 100)), {"user": rng.integers(1, 20, 32),
                                                                     "target": rng.integers(1, 30, 32)}
out = {}
for name, strategy in [("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder = NGCFEncoder(20, 30, 8, 2, users=edges[0], items=edges[1], dropout=0.0)
        model = TwoTowerModel(LightGCNUserTower(encoder), LightGCNItemTower(encoder),
                              losses.InBatchSoftmax(temperature=0.2), num_items=30)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
    loss = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=1, verbose=0).history["loss"][0]
    out[name] = {"loss": loss, "weights": [w.numpy().tolist() for w in model.trainable_weights]}
print(json.dumps(out))
"""


def test_one_propagation_per_replica_under_mirrored_strategy():
    """Each replica traces in its own thread: it propagates once itself (its own tape), and two
    steps over two replicas give the single-device loss and weights."""
    from tests.test_distribute import run_script

    out = run_script(MIRRORED_SCRIPT)
    assert abs(out["mirrored"]["loss"] - out["single"]["loss"]) < 1e-5 * max(1.0, abs(out["single"]["loss"]))
    for got, want in zip(out["mirrored"]["weights"], out["single"]["weights"]):
        np.testing.assert_allclose(got, want, atol=1e-5)
