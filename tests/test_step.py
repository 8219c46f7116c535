"""The training step in parts: encode (towers + flattening), the objective through a step
context, one gradient helper, state updated once per step after the loss; compile(metrics)
refused."""

import numpy as np
import pytest

from tfsoft import losses
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.model import TwoTowerModel, example_rows
from tfsoft.towers import HistoryPoolingTower, IdTower

from tests.losses import reference as ref

V, D, B, L = 30, 8, 12, 5


class PositionTower(keras.layers.Layer):
    """A query per position: the embedding of the item at that position ([B, L, d])."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def call(self, inputs, training=False):
        return self.embedding(inputs["history"])


def model_with(loss, query=None, **kwargs):
    keras.utils.set_random_seed(0)
    items = IdTower(V, D, name="candidate")
    query = query(items) if query else HistoryPoolingTower(V, D, item_embedding=items.embedding, name="query")
    model = TwoTowerModel(query, items, loss, num_items=V, item_counts=np.r_[0, np.arange(V - 1, 0, -1)], seed=1,
                          **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def sequence_batch(rng):
    history = rng.integers(1, V, size=(B, L))
    lengths = rng.integers(1, L + 1, size=B)
    for row, length in enumerate(lengths):  # left padding: the first L - length positions are empty
        history[row, : L - length] = 0
    target = np.where(history > 0, rng.integers(1, V, size=(B, L)), 0)
    return {"user": np.arange(B), "history": history, "target": target}


def test_per_position_targets_flatten_to_the_non_padding_positions_and_match_numpy():
    rng = np.random.default_rng(4)
    data = sequence_batch(rng)
    model = model_with(losses.InBatchSoftmax(temperature=0.2, log_q=True), query=lambda items: PositionTower(items.embedding))
    encoded = model.encode({k: tf.constant(v) for k, v in data.items()})
    keep = data["target"] > 0
    np.testing.assert_array_equal(encoded.target.numpy(), data["target"][keep])
    np.testing.assert_array_equal(example_rows(tf.constant(data["target"])).numpy(),
                                  np.repeat(np.arange(B), L).reshape(B, L)[keep])
    np.testing.assert_array_equal(example_rows(tf.constant(data["target"][:, -1])).numpy(), np.arange(B))
    table = model.candidate_tower.embedding.embeddings.numpy().astype(np.float64)
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    query, positive, targets = unit[data["history"][keep]], unit[data["target"][keep]], data["target"][keep]
    counts = model.item_counts
    log_count = np.log(len(targets)) + np.log(np.maximum(counts, 1e-3) / counts.sum())[targets]
    expected = ref.in_batch_softmax(query, positive, targets, np.arange(len(targets)), 0.2, log_count).mean()
    got = model.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(B), verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx(expected, rel=1e-5)


def test_the_streaming_estimator_advances_once_per_step_after_the_loss():
    model = model_with(losses.InBatchSoftmax(log_q=True, frequency="streaming"))
    rng = np.random.default_rng(0)
    data = {"user": np.arange(4 * B), "history": rng.integers(1, V, size=(4 * B, L)),
            "target": rng.integers(1, V, size=4 * B)}
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(B), epochs=2, verbose=0)
    assert int(model.frequency_estimator.step.numpy()) == 8  # 2 epochs x 4 steps
    seen = model.frequency_estimator.last_seen.numpy()
    assert seen.max() == 8 and seen[np.unique(data["target"][-B:])].min() == 8
    # the loss of a step reads the estimate of the steps before it: evaluation does not advance it
    model.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(B), verbose=0)
    assert int(model.frequency_estimator.step.numpy()) == 8


def test_compile_refuses_metrics_and_losses_it_would_ignore():
    model = model_with(losses.InBatchSoftmax())
    with pytest.raises(ConfigError, match=r"compile\(metrics=...\) would be ignored; got \['accuracy'\]"):
        model.compile(optimizer="adam", metrics=["accuracy"])
    with pytest.raises(ConfigError, match=r"compile\(loss=...\) would be ignored; got 'mse'"):
        model.compile(optimizer="adam", loss="mse")


def test_a_step_with_two_optimizers_reuses_the_gradient_helper():
    class TwoOptimizers(TwoTowerModel):
        """Query tower by the compiled SGD, candidate tower by a second SGD with lr 0."""

        def train_step(self, data):
            with tf.GradientTape(persistent=True) as tape:
                loss, encoded = self.compute_loss_value(data, training=True)
            self.apply_gradients(tape, loss, self.query_tower.trainable_variables)
            self.apply_gradients(tape, loss, self.candidate_tower.trainable_variables, self.frozen)
            self.update_state(encoded)
            return self._track(loss)

    keras.utils.set_random_seed(0)
    items = IdTower(V, D, name="candidate")
    model = TwoOptimizers(HistoryPoolingTower(V, D, name="query"), items, losses.InBatchSoftmax(), num_items=V)
    model.frozen = keras.optimizers.SGD(0.0)
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    rng = np.random.default_rng(1)
    data = {"user": np.arange(B), "history": rng.integers(1, V, size=(B, L)), "target": rng.integers(1, V, size=B)}
    model.encode({k: tf.constant(v) for k, v in data.items()})  # build both towers
    query_before = model.query_tower.trainable_variables[0].numpy().copy()
    items_before = items.embedding.embeddings.numpy().copy()
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(B), epochs=1, verbose=0)
    assert not np.allclose(model.query_tower.trainable_variables[0].numpy(), query_before)
    np.testing.assert_array_equal(items.embedding.embeddings.numpy(), items_before)
