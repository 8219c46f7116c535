"""tfsoft.gradients: sparse embedding gradients made dense, against NumPy and the sparse path."""

import numpy as np
import pytest

from tfsoft import losses
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.gradients import (SAME_UPDATE_DENSE_OR_SPARSE, dense_from_slices, prepare_gradients, should_densify,
                              updates_every_row)
from tfsoft.model import TwoTowerModel
from tfsoft.optimizers import LazyAdam
from tfsoft.towers import HistoryPoolingTower, IdTower

V, D = 12, 3


def slices(seed=0, rows=9, static=True):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, V, size=rows)
    indices[:3] = 5  # repeated rows must be summed
    values = rng.normal(size=(rows, D)).astype(np.float32)
    return tf.IndexedSlices(tf.constant(values), tf.constant(indices, tf.int64), tf.constant([V, D], tf.int64)), indices, values


def test_dense_from_slices_sums_repeated_rows_like_numpy():
    gradient, indices, values = slices()
    expected = np.zeros((V, D), np.float32)
    np.add.at(expected, indices, values)
    np.testing.assert_allclose(dense_from_slices(gradient, V).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_auto_densifies_for_every_row_optimizers_and_large_slices_only():
    variable = tf.Variable(tf.zeros([V, D]))
    few, _, _ = slices(rows=4)
    many, _, _ = slices(rows=V)
    for every_row in (keras.optimizers.Adam(), keras.optimizers.legacy.Adam(), keras.optimizers.RMSprop(),
                      keras.optimizers.AdamW(), keras.optimizers.SGD(momentum=0.9),
                      keras.mixed_precision.LossScaleOptimizer(keras.optimizers.Adam())):
        assert updates_every_row(every_row) and should_densify(few, variable, every_row)
    for truly_sparse in (keras.optimizers.SGD(), keras.optimizers.Adagrad()):
        assert not updates_every_row(truly_sparse)
        assert not should_densify(few, variable, truly_sparse)   # 4 rows of 12: stay sparse
        assert should_densify(many, variable, truly_sparse)      # as many rows as the table: dense
        assert should_densify(few, variable, truly_sparse, "always")
    assert not should_densify(many, variable, keras.optimizers.Adam(), "never")
    with pytest.raises(ConfigError, match="dense_gradients must be one of"):
        should_densify(few, variable, keras.optimizers.Adam(), "sometimes")


class _CustomAdam(keras.optimizers.Adam):
    """A user's subclass: its update is unknown to tfsoft, so auto leaves its slices alone."""


#: Optimizers whose sparse update differs from their dense one (lazy, or clipping slices).
DIFFERENT_UPDATE = {
    "lazy_adam": lambda: LazyAdam(0.1),
    "legacy_adamax": lambda: keras.optimizers.legacy.Adamax(0.1),
    "legacy_nadam": lambda: keras.optimizers.legacy.Nadam(0.1),
    "legacy_sgd_momentum": lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9),
    "legacy_rmsprop_momentum": lambda: keras.optimizers.legacy.RMSprop(0.1, momentum=0.9),
    "adam_clipnorm": lambda: keras.optimizers.Adam(0.1, clipnorm=0.5),
    "adam_clipvalue": lambda: keras.optimizers.Adam(0.1, clipvalue=0.05),
}


@pytest.mark.parametrize("name", sorted(DIFFERENT_UPDATE))
def test_auto_keeps_slices_for_optimizers_whose_update_would_change(name):
    variable = tf.Variable(tf.zeros([V, D]))
    many, _, _ = slices(rows=2 * V)
    assert not should_densify(many, variable, DIFFERENT_UPDATE[name]())
    assert not should_densify(many, variable, DIFFERENT_UPDATE[name](), replicas=4)
    # ... and that is why: made dense, their update would differ from their own sparse one.
    dense, sparse = _apply(DIFFERENT_UPDATE[name](), dense=True), _apply(DIFFERENT_UPDATE[name](), dense=False)
    assert np.abs(dense - sparse).max() > 1e-3


def test_auto_keeps_slices_for_unknown_optimizer_classes():
    variable = tf.Variable(tf.zeros([V, D]))
    many, _, _ = slices(rows=2 * V)
    assert not should_densify(many, variable, _CustomAdam())


def test_several_replicas_densify_only_when_the_gathered_slices_cover_the_table():
    """Dense gradients are all-reduced (V rows), slices all-gathered (replicas x rows)."""
    variable = tf.Variable(tf.zeros([V, D]))
    quarter, _, _ = slices(rows=V // 4)
    half, _, _ = slices(rows=V // 2)
    adam = keras.optimizers.Adam()
    assert should_densify(quarter, variable, adam, replicas=1)           # Adam touches every row anyway
    assert not should_densify(quarter, variable, adam, replicas=2)       # 2 x 3 rows < 12
    assert should_densify(half, variable, adam, replicas=2)              # 2 x 6 rows = 12
    assert should_densify(quarter, variable, keras.optimizers.SGD(), replicas=4)
    assert should_densify(quarter, variable, adam, "always", replicas=8)


def test_unknown_slice_rows_stay_sparse_for_sparse_optimizers():
    variable = tf.Variable(tf.zeros([V, D]))
    sgd = keras.optimizers.SGD()

    @tf.function(input_signature=[tf.TensorSpec([None, D]), tf.TensorSpec([None], tf.int64)])
    def decide(values, indices):
        gradient = tf.IndexedSlices(values, indices)
        return tf.constant(should_densify(gradient, variable, sgd))

    assert not decide(tf.zeros([20, D]), tf.zeros([20], tf.int64)).numpy()


def test_prepare_gradients_passes_dense_and_missing_gradients_through():
    variables = [tf.Variable(tf.zeros([V, D])), tf.Variable(tf.zeros([D])), tf.Variable(tf.zeros([2]))]
    sparse, indices, values = slices()
    dense = tf.ones([D])
    out = prepare_gradients([sparse, dense, None], variables, keras.optimizers.Adam())
    expected = np.zeros((V, D), np.float32)
    np.add.at(expected, indices, values)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert out[1] is dense and out[2] is None
    kept = prepare_gradients([sparse], variables[:1], keras.optimizers.SGD())
    assert isinstance(kept[0], tf.IndexedSlices)


def _apply(optimizer, dense, steps=3):
    """Run `steps` updates of one table with repeated-row sparse gradients, densified or not."""
    variable = tf.Variable(np.linspace(-1, 1, V * D, dtype=np.float32).reshape(V, D))
    for step in range(steps):
        gradient, _, _ = slices(seed=step)
        [gradient] = prepare_gradients([gradient], [variable], optimizer, "always" if dense else "never")
        optimizer.apply_gradients([(gradient, variable)])
    return variable.numpy()


SAME_UPDATE_CASES = [(cls, {}) for cls in SAME_UPDATE_DENSE_OR_SPARSE] + [
    (keras.optimizers.SGD, {"momentum": 0.9}), (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
    (keras.optimizers.RMSprop, {"momentum": 0.9}), (keras.optimizers.RMSprop, {"centered": True}),
]


@pytest.mark.parametrize("cls, options", SAME_UPDATE_CASES,
                         ids=[f"{c.__module__.split('.')[-2]}.{c.__name__}{o or ''}" for c, o in SAME_UPDATE_CASES])
def test_dense_update_equals_the_sparse_update(cls, options):
    """Every class auto may densify for: the same weights from the slices and from their sum."""
    dense, sparse = _apply(cls(0.1, **options), dense=True), _apply(cls(0.1, **options), dense=False)
    assert np.abs(dense - _apply(cls(0.1, **options), dense=True, steps=0)).max() > 1e-4  # it did train
    np.testing.assert_allclose(dense, sparse, rtol=1e-5, atol=1e-6)


def test_fused_legacy_adam_on_dense_gradients_equals_keras_adam_on_slices():
    """tfsoft's `adam` (legacy Adam, fused ResourceApplyAdam) = keras.optimizers.Adam, sparse."""
    fused = _apply(keras.optimizers.legacy.Adam(0.1), dense=True, steps=5)
    reference = _apply(keras.optimizers.Adam(0.1), dense=False, steps=5)
    np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-5)  # float32 rounding of two kernels


def test_numpy_adam_reference_matches_the_dense_path():
    """Adam (Kingma & Ba 2015, Alg. 1) in NumPy on the dense sum of the slices."""
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-7
    w = np.linspace(-1, 1, V * D, dtype=np.float64).reshape(V, D)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(3):
        _, indices, values = slices(seed=step)
        g = np.zeros_like(w)
        np.add.at(g, indices, values.astype(np.float64))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        t = step + 1
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(_apply(keras.optimizers.legacy.Adam(lr, epsilon=eps), dense=True), w, rtol=1e-4, atol=1e-5)


def _trained_weights(policy, make_optimizer):
    keras.utils.set_random_seed(0)
    items = IdTower(V, D)
    model = TwoTowerModel(HistoryPoolingTower(V, D, item_embedding=items.embedding), items,
                          losses.InBatchSoftmax(temperature=0.2), num_items=V, dense_gradients=policy)
    model.compile(optimizer=make_optimizer())
    rng = np.random.default_rng(0)
    data = {"history": rng.integers(0, V, size=(32, 4)), "target": rng.integers(1, V, size=32)}
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=2, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adam(0.05), lambda: keras.optimizers.Adagrad(0.1)])
def test_model_trains_the_same_with_dense_or_sparse_table_gradients(make):
    for dense, sparse in zip(_trained_weights("always", make), _trained_weights("never", make)):
        np.testing.assert_allclose(dense, sparse, rtol=1e-4, atol=1e-5)


def test_model_rejects_unknown_dense_gradients_policy():
    items = IdTower(V, D)
    with pytest.raises(ConfigError, match="dense_gradients must be one of"):
        TwoTowerModel(HistoryPoolingTower(V, D), items, losses.InBatchSoftmax(), num_items=V, dense_gradients="yes")


@pytest.mark.parametrize("policy, make, expected", [
    ("auto", lambda: keras.optimizers.Adam(0.05), "dense"),
    ("never", lambda: keras.optimizers.Adam(0.05), "sparse"),
    ("auto", lambda: LazyAdam(0.05), "sparse"),
    ("auto", lambda: keras.optimizers.Adagrad(0.1), "sparse"),   # 8 x 5 rows < 64: stays sparse
    ("always", lambda: keras.optimizers.Adagrad(0.1), "dense"),
])
def test_train_step_hands_the_optimizer_what_the_policy_says(policy, make, expected):
    keras.utils.set_random_seed(0)
    rows = 64
    items = IdTower(rows, D)
    model = TwoTowerModel(HistoryPoolingTower(rows, D, item_embedding=items.embedding), items,
                          losses.InBatchSoftmax(temperature=0.2), num_items=rows, dense_gradients=policy)
    optimizer = make()
    seen = []
    apply = optimizer.apply_gradients

    def spy(grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        seen.extend("sparse" if isinstance(g, tf.IndexedSlices) else "dense" for g, v in grads_and_vars
                    if "embedding" in v.name)
        return apply(grads_and_vars, *args, **kwargs)

    optimizer.apply_gradients = spy
    model.compile(optimizer=optimizer, run_eagerly=True)
    rng = np.random.default_rng(0)
    data = {"history": rng.integers(1, rows, size=(8, 4)), "target": rng.integers(1, rows, size=8)}
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=1, verbose=0)
    assert seen and set(seen) == {expected}


def test_config_dense_gradients_reaches_the_model(lastfm):
    from pathlib import Path

    from tfsoft.config import load_config
    from tfsoft.training import build_model, prepare_data

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "lastfm_in_batch.yaml",
                         ["train.dense_gradients=never", "model.embedding_dim=8"])
    assert build_model(config, prepare_data(config.data)).dense_gradients == "never"
