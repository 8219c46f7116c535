"""tfsoft.optimizers.LazyAdam against a NumPy reference: only the batch's rows move."""

import numpy as np
import pytest

from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.gradients import should_densify, updates_every_row
from tfsoft.optimizers import LazyAdam

V, D = 10, 3
LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-7


def batches():
    rng = np.random.default_rng(0)
    out = []
    for rows in ([1, 4, 4, 7], [4, 2], [9, 1, 1]):  # repeated rows are summed first
        indices = np.array(rows)
        out.append((indices, rng.normal(size=(len(rows), D)).astype(np.float32)))
    return out


def numpy_lazy_adam(weights):
    w, m, v = weights.astype(np.float64), np.zeros((V, D)), np.zeros((V, D))
    for t, (indices, values) in enumerate(batches(), start=1):
        g = np.zeros((V, D))
        np.add.at(g, indices, values)
        rows = np.unique(indices)
        m[rows] = B1 * m[rows] + (1 - B1) * g[rows]
        v[rows] = B2 * v[rows] + (1 - B2) * g[rows] ** 2
        w[rows] -= LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t) * m[rows] / (np.sqrt(v[rows]) + EPS)
    return w


def test_lazy_adam_matches_numpy_and_leaves_untouched_rows_alone():
    start = np.linspace(-1, 1, V * D, dtype=np.float32).reshape(V, D)
    variable = tf.Variable(start)
    optimizer = LazyAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    for indices, values in batches():
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int64),
                                                     tf.constant([V, D], tf.int64)), variable)])
    np.testing.assert_allclose(variable.numpy(), numpy_lazy_adam(start), rtol=1e-5, atol=1e-6)
    untouched = [0, 3, 5, 6, 8]
    np.testing.assert_array_equal(variable.numpy()[untouched], start[untouched])


def test_lazy_adam_on_dense_gradients_is_adam():
    start = np.linspace(-1, 1, V * D, dtype=np.float32).reshape(V, D)
    results = []
    for optimizer in (LazyAdam(LR), keras.optimizers.Adam(LR)):
        variable = tf.Variable(start)
        for indices, values in batches():
            dense = np.zeros((V, D), np.float32)
            np.add.at(dense, indices, values)
            optimizer.apply_gradients([(tf.constant(dense), variable)])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_lazy_adam_first_step_equals_adam_on_the_touched_rows():
    """With fresh moments, one lazy step is Adam's step on the rows of the batch."""
    start = np.linspace(-1, 1, V * D, dtype=np.float32).reshape(V, D)
    indices, values = batches()[0]
    results = []
    for optimizer in (LazyAdam(LR), keras.optimizers.Adam(LR)):
        variable = tf.Variable(start)
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int64)), variable)])
        results.append(variable.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)  # same maths, operations in another order


def test_lazy_adam_keeps_sparse_gradients_sparse_and_rejects_what_touches_every_row():
    assert not updates_every_row(LazyAdam())
    table = tf.Variable(tf.zeros([V, D]))
    few = tf.IndexedSlices(tf.zeros([3, D]), tf.constant([1, 2, 3], tf.int64))
    many = tf.IndexedSlices(tf.zeros([2 * V, D]), tf.zeros([2 * V], tf.int64))
    assert not should_densify(few, table, LazyAdam()) and not should_densify(many, table, LazyAdam(), replicas=2)
    assert should_densify(few, table, keras.optimizers.Adam())
    for option in ({"amsgrad": True}, {"use_ema": True}, {"weight_decay": 0.01}):
        with pytest.raises(ConfigError, match=next(iter(option))):
            LazyAdam(**option)
    assert LazyAdam().jit_compile is False  # a new XLA compilation per distinct row count otherwise


def test_model_with_lazy_adam_moves_only_the_rows_of_each_batch():
    """In TwoTowerModel (dense_gradients auto, slices holding more rows than the table)."""
    from tfsoft import losses
    from tfsoft.model import TwoTowerModel
    from tfsoft.towers import HistoryPoolingTower, IdTower

    rows = 30
    keras.utils.set_random_seed(0)
    items = IdTower(rows, 4)
    model = TwoTowerModel(HistoryPoolingTower(rows, 4, item_embedding=items.embedding), items,
                          losses.InBatchSoftmax(temperature=0.2), num_items=rows)
    model.compile(optimizer=LazyAdam(0.05))
    rng = np.random.default_rng(0)
    everything = {"history": rng.integers(1, rows, size=(8, 4)), "target": rng.integers(1, rows, size=8)}
    few_rows = {"history": rng.integers(1, 6, size=(8, 4)), "target": rng.integers(1, 6, size=8)}  # 40 slice rows
    model.fit(tf.data.Dataset.from_tensor_slices(everything).batch(8, drop_remainder=True), epochs=1, verbose=0)
    before = items.embedding.embeddings.numpy().copy()
    model.fit(tf.data.Dataset.from_tensor_slices(few_rows).batch(8, drop_remainder=True), epochs=1, verbose=0)
    after = items.embedding.embeddings.numpy()
    np.testing.assert_array_equal(after[6:], before[6:])          # untouched rows: not moved
    assert np.abs(after[1:6] - before[1:6]).min() > 0              # the batch's rows moved


def test_lazy_adam_config_round_trip():
    optimizer = LazyAdam(0.01, beta_1=0.8)
    restored = LazyAdam.from_config(optimizer.get_config())
    assert isinstance(restored, LazyAdam) and restored.beta_1 == 0.8
    assert float(restored.learning_rate.numpy() if hasattr(restored.learning_rate, "numpy") else restored.learning_rate) == pytest.approx(0.01)


@pytest.mark.parametrize("name, expected", [("adam", keras.optimizers.legacy.Adam), ("lazy_adam", LazyAdam),
                                            ("adagrad", keras.optimizers.Adagrad), ("sgd", keras.optimizers.SGD)])
def test_config_names_build_their_optimizer(name, expected):
    from pathlib import Path

    from tfsoft.config import load_config
    from tfsoft.training import make_optimizer

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lastfm_in_batch.yaml",
                         [f"train.optimizer={name}", "train.learning_rate=0.02"])
    optimizer = make_optimizer(config)
    assert type(optimizer) is expected
    assert float(tf.keras.backend.get_value(optimizer.learning_rate)) == pytest.approx(0.02)
