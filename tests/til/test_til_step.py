"""TIL's bilevel step: the outer gradient against central finite differences (float64), the
paper's argument (joint optimisation drives the weights to 0, the bilevel step does not), the
LightGCN look-ahead, and ``til`` under ``fit`` with callbacks, checkpoints and export."""

import json

import numpy as np
import pytest

from tfsoft.backend import keras, tf
from tfsoft.til.model import TILModel
from tfsoft.til.objective import TIL
from tfsoft.towers import IdTower

U, V, D = 7, 13, 4


def interactions(rng, users=U, items=V, per_user=4):
    """Each user likes a random block of items: a learnable, clustered toy log."""
    rows = []
    for user in range(1, users):
        start = rng.integers(1, items - per_user)
        rows += [(user, item) for item in range(start, start + per_user)]
    return np.array(rows, np.int64).T


def mf_model(rng, objective, users=U, items=V, dim=D, log=None):
    keras.utils.set_random_seed(0)
    train_users, train_items = interactions(rng, users, items) if log is None else log
    model = TILModel(IdTower(users, dim, feature="user", name="query_tower"),
                     IdTower(items, dim, name="candidate_tower"),
                     objective, train_users=train_users, train_items=train_items, num_users=users, num_items=items,
                     similarity="dot", seed=0)
    return model, (train_users, train_items)


@pytest.fixture
def float64():
    keras.backend.set_floatx("float64")
    yield
    keras.backend.set_floatx("float32")


@pytest.mark.parametrize("strategy, detach, normalisation", [("uni", True, "none"), ("multi", False, "batch_mean")])
def test_outer_gradient_matches_central_finite_differences(rng, float64, strategy, detach, normalisation):
    extra = {"num_clusters": 3, "pretrain_steps": 0, "alpha": 0.5, "gamma": 0.1} if strategy == "multi" else {}
    objective = TIL(strategy=strategy, hidden_units=5, inner_lr=0.5, detach_state=detach, num_negatives=2,
                    weight_activation="softplus", weight_normalisation=normalisation, **extra)
    model, (users, items) = mf_model(rng, objective)
    for table in (model.backbone.user_table, model.backbone.item_table):  # larger scores: visible curvature
        table.assign(table * 4.0)
    model.refresh_clusters()  # multi: K-means initialises Φ, then memberships and T
    batch = rng.choice(len(users), 5, replace=False)
    features = {"user": tf.constant(users[batch]), "target": tf.constant(items[batch])}
    negatives = tf.constant(rng.integers(1, V, size=(5, 2)))

    def outer_loss():  # J_out = Σ_batch ℓ(Θ′): the step reports it per example
        return 5 * float(model.bilevel_gradients(features, negatives)[3].numpy())

    hypergradient = model.bilevel_gradients(features, negatives)[0]
    assert all(g is not None for g in hypergradient)
    eps, checked = 1e-6, 0
    for variable, gradient in zip(model.generator.trainable_variables, hypergradient):
        gradient = tf.convert_to_tensor(gradient).numpy().reshape(-1)
        for index in np.unique(rng.integers(0, gradient.size, size=6)):
            base = variable.numpy()
            flat = base.reshape(-1).copy()
            flat[index] += eps
            variable.assign(flat.reshape(base.shape))
            plus = outer_loss()
            flat[index] -= 2 * eps
            variable.assign(flat.reshape(base.shape))
            minus = outer_loss()
            variable.assign(base)
            assert gradient[index] == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)
            checked += 1
    assert checked >= 12
    assert np.abs(np.concatenate([tf.convert_to_tensor(g).numpy().ravel() for g in hypergradient])).max() > 1e-6


class JointTIL(TILModel):
    """The naive formulation (Eq. 10): Θ and Λ both minimise the weighted loss."""

    def train_step(self, data):
        negatives = self.sample_negatives(tf.cast(data["user"], tf.int64))
        with tf.GradientTape(persistent=True) as tape:
            forward = self.forward(data, negatives)
            weights = self.generator(forward.state)
            loss = tf.reduce_mean(tf.reduce_sum(forward.coefficient * weights * forward.pair, 1))
        self.apply_gradients(tape, loss, self.generator.trainable_variables, self.generator_optimizer)
        self.apply_gradients(tape, loss, self.theta_variables())
        self.weight_tracker.update_state(tf.boolean_mask(weights, forward.coefficient > 0))
        return {"loss": loss, "weight": self.weight_tracker.result()}


def test_joint_optimisation_drives_weights_to_zero_and_the_bilevel_step_does_not(rng):
    log = interactions(rng, users=40, items=60, per_user=8)
    data = tf.data.Dataset.from_tensor_slices({"user": log[0], "target": log[1]}).shuffle(400, seed=0).batch(64)
    means = {}
    for name, cls in (("joint", JointTIL), ("bilevel", TILModel)):
        objective = TIL(hidden_units=16, generator_learning_rate=0.01, inner_lr=0.1)
        keras.utils.set_random_seed(0)
        model = cls(IdTower(40, 8, feature="user"), IdTower(60, 8), objective, train_users=log[0], train_items=log[1],
                    num_users=40, num_items=60, similarity="dot", seed=0)
        model.compile(optimizer=keras.optimizers.legacy.Adam(0.01))
        history = model.fit(data, epochs=25, verbose=0).history
        means[name] = history["weight"]
    assert means["joint"][-1] < 0.05 < means["joint"][0]          # the shortcut: w → 0
    assert means["bilevel"][-1] > 0.3                              # the bilevel weights do not collapse
    # (on this clean toy log they rise towards 1: a larger weight is a larger look-ahead step)


def test_the_lightgcn_look_ahead_at_zero_displacement_is_the_towers_output(rng, lastfm):
    from tfsoft.config import parse_config
    from tfsoft.til.lookahead import Displacement
    from tfsoft.training import build_model, prepare_data

    config = parse_config({"data": {"path": "lastfm_small", "split": "ratio"}, "loss": "til",
                           "model": {"query_tower": {"name": "lightgcn", "num_layers": 1}, "embedding_dim": 8,
                                     "similarity": "dot"}})
    model = build_model(config, prepare_data(config.data))
    assert model.backbone.name == "lightgcn"
    users, items = tf.constant([1, 5, 5], tf.int64), tf.constant([3, 2, 9, 3], tf.int64)

    def still(ids):
        rows, index = tf.unique(ids, out_idx=tf.int32)
        return Displacement(rows, tf.zeros([tf.shape(rows)[0], 8]), index)

    user, item = model.backbone.displaced(still(users), still(items))
    np.testing.assert_allclose(user.numpy(), model.query_tower({"user": users}).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(item.numpy(), model.candidate_tower(items).numpy(), rtol=1e-5, atol=1e-7)


def test_til_config_errors_name_the_key():
    from tfsoft.config import parse_config
    from tfsoft.errors import ConfigError

    with pytest.raises(ConfigError, match=r"key 'gamma' is read only with strategy 'multi'; got strategy 'uni'"):
        parse_config({"loss": {"name": "til", "gamma": 0.1}})
    with pytest.raises(ConfigError, match=r"weight_activation"):
        parse_config({"loss": {"name": "til", "weight_activation": "relu"}})
    with pytest.raises(ConfigError, match=r"inner_lr"):
        parse_config({"loss": {"name": "til", "inner_lr": 0}})
    with pytest.raises(ConfigError, match=r"'gamma' weighs the end-to-end clustering loss"):
        parse_config({"loss": {"name": "til", "strategy": "multi", "clustering": "kmeans", "gamma": 0.1}})
    loss = parse_config({"loss": {"name": "til", "strategy": "multi", "clustering": "kmeans"}}).loss.build()
    assert (loss.name, loss.strategy, loss.clustering, loss.inner_lr) == ("til", "multi", "kmeans", 1e-3)


def test_til_trains_under_fit_with_checkpoints_and_exports(tmp_path_factory):
    from tests.conftest import TINY_TRAINING, train_small_run
    from tfsoft.export.exporter import export_run
    from tfsoft.loaded_run import evaluate_run, open_run

    root = tmp_path_factory.mktemp("runs") / "til"
    train_small_run(root, *TINY_TRAINING, "model.query_tower=id", "model.similarity=dot", "loss=til",
                    "loss.strategy=multi", "loss.num_clusters=4", "loss.pretrain_steps=1", "loss.refresh_every=1")
    assert (root / "checkpoints" / "best.weights.h5").is_file() and (root / "checkpoints" / "last.weights.h5").is_file()
    header = (root / "history.csv").read_text().splitlines()[0]
    assert "outer_loss" in header and "weight" in header
    metrics = json.loads((root / "metrics.json").read_text())
    run = open_run(root)
    model = run.model
    assert isinstance(model, TILModel) and int(model.til_state.step.numpy()) == 3
    assert np.abs(model.til_state.centres.numpy()).sum() > 0  # the clusters were saved with the weights
    assert evaluate_run(root)["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-9)
    export = tmp_path_factory.mktemp("exports")
    export_run(root, export)
    assert any(path.name == "saved_model.pb" for path in export.rglob("saved_model.pb"))


def test_the_step_masks_every_seen_negative_and_uniform_weighting_is_masked_bpr(rng):
    model, (users, items) = mf_model(rng, TIL(weighting="uniform", num_negatives=3))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    rows = np.arange(6)
    features = {"user": tf.constant(users[rows]), "target": tf.constant(items[rows])}
    seen = {(u, i) for u, i in zip(users, items)}
    negatives = rng.integers(1, V, size=(6, 3))
    negatives[:, 0] = [items[users == u][-1] for u in users[rows]]  # one of the user's training items
    forward = model.forward(features, tf.constant(negatives), training=False)
    keep = np.array([[(u, j) not in seen for j in row] for u, row in zip(users[rows], negatives)])
    assert not keep[:, 0].any()
    np.testing.assert_array_equal(forward.coefficient.numpy() > 0, keep)
    p = model.backbone.user_table.numpy()[users[rows]]
    q = model.backbone.item_table.numpy()
    pair = np.logaddexp(0, -((p * q[items[rows]]).sum(-1)[:, None] - np.einsum("bd,bnd->bn", p, q[negatives])))
    np.testing.assert_allclose(forward.pair.numpy(), pair, rtol=1e-5)
    expected = np.mean([row[k].mean() if k.any() else 0.0 for row, k in zip(pair, keep)])
    np.testing.assert_allclose(tf.reduce_sum(forward.coefficient * forward.pair).numpy() / 6, expected, rtol=1e-5)
    before = model.backbone.item_table.numpy().copy()
    history = model.fit(tf.data.Dataset.from_tensor_slices({"user": users, "target": items}).batch(8), epochs=1,
                        verbose=0).history
    assert set(history) == {"loss"} and not np.allclose(model.backbone.item_table.numpy(), before)
    assert model.generator.trainable_variables[0].numpy().std() > 0  # untouched, still initialised


def test_sample_weights_scale_each_examples_terms_like_every_other_loss(rng):
    """``features["weight"]`` (e.g. ML-1M ratings): Σ_b w_b ℓ_b / B, as
    :func:`tfsoft.losses.reduction.weighted_mean`; weight 0 removes an example's gradient."""
    model, (users, items) = mf_model(rng, TIL(weighting="uniform", num_negatives=3))
    rows = np.arange(6)
    weight = np.array([0.0, 1.0, 2.0, 0.5, 3.0, 1.0], np.float32)
    negatives = tf.constant(rng.integers(1, V, size=(6, 3)))
    plain = {"user": tf.constant(users[rows]), "target": tf.constant(items[rows])}
    weighted = dict(plain, weight=tf.constant(weight))
    unweighted, scaled = model.forward(plain, negatives, False), model.forward(weighted, negatives, False)
    np.testing.assert_allclose(scaled.coefficient.numpy(), unweighted.coefficient.numpy() * weight[:, None])
    per_example = (unweighted.coefficient * unweighted.pair).numpy().sum(1)
    loss = tf.reduce_sum(scaled.coefficient * scaled.pair).numpy() / 6
    np.testing.assert_allclose(loss, (weight * per_example).sum() / 6, rtol=1e-5)
    with tf.GradientTape() as tape:
        forward = model.forward(weighted, negatives)
        value = tf.reduce_sum(forward.coefficient * forward.pair)
    gradient = tf.convert_to_tensor(tape.gradient(value, model.backbone.user_table)).numpy()
    zero_user = users[0]
    if not (users[rows][1:] == zero_user).any():
        np.testing.assert_array_equal(gradient[zero_user], 0.0)
    assert np.abs(gradient[users[rows][2]]).sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_theta_steps_on_the_weighted_loss_with_the_updated_generator_and_no_outer_gradient(rng, float64, detach):
    objective = TIL(strategy="multi", num_clusters=3, pretrain_steps=0, hidden_units=5, inner_lr=0.5, gamma=0.1,
                    detach_state=detach, num_negatives=2)
    model, (users, items) = mf_model(rng, objective)
    model.generator_optimizer = keras.optimizers.legacy.SGD(0.5)
    model.refresh_clusters()
    features = {"user": tf.constant(users[:5]), "target": tf.constant(items[:5])}
    negatives = tf.constant(rng.integers(1, V, size=(5, 2)))
    hypergradient, inner, forward, _, regularisation = model.bilevel_gradients(features, negatives)
    before = [v.numpy().copy() for v in model.generator.trainable_variables]
    model.generator_optimizer.apply_gradients(zip(hypergradient, model.generator.trainable_variables))
    assert any(not np.allclose(v.numpy(), b) for v, b in zip(model.generator.trainable_variables, before))
    gradients, variables, _, _ = model.theta_gradients(inner, forward, regularisation)
    with tf.GradientTape() as tape:  # the reference: a fresh forward, Λ_{t+1}, no look-ahead anywhere
        fresh = model.forward(features, negatives)
        weights = model.generator(fresh.state)
        loss = tf.reduce_sum(fresh.coefficient * weights * fresh.pair) / 5 + 0.1 * fresh.clustering_loss
    expected = tape.gradient(loss, variables)
    assert len(variables) == 3  # user table, item table, centres Φ: never the generator
    for got, want in zip(gradients, expected):
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(),
                                   rtol=1e-9, atol=1e-12)
