"""TwoTowerModel: the train_step computes the configured loss, fit works with Keras callbacks."""

import numpy as np
import pytest

from tfsoft import losses
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.model import TwoTowerModel
from tfsoft.towers import HistoryPoolingTower, IdTower

from tests.losses import reference as ref

V, D, B, L = 30, 8, 16, 5


def small_model(loss, similarity="cosine", **kwargs):
    keras.utils.set_random_seed(0)
    items = IdTower(V, D, name="candidate")
    query = HistoryPoolingTower(V, D, item_embedding=items.embedding, name="query")
    counts = np.r_[0, np.arange(V - 1, 0, -1)]
    model = TwoTowerModel(query, items, loss, num_items=V, item_counts=counts, similarity=similarity, seed=1, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model


def batch(seed=0):
    rng = np.random.default_rng(seed)
    history = rng.integers(0, V, size=(B, L))
    history[:, -1] = rng.integers(1, V, size=B)
    return {"user": np.arange(B), "history": history, "target": rng.integers(1, V, size=B),
            "weight": rng.uniform(0.5, 2.0, size=B).astype(np.float32)}


ALL_LOSSES = [
    losses.FullSoftmax(temperature=0.2),
    losses.SampledSoftmax(num_negatives=12, proposal="unigram", temperature=0.2),
    losses.SampledSoftmax(num_negatives=4, proposal="log_uniform", shared_negatives=False),
    losses.InBatchSoftmax(temperature=0.1, log_q=True),
    losses.InBatchSoftmax(temperature=0.1, num_uniform_negatives=8, log_q=True),
    losses.InBatchSoftmax(temperature=0.1, log_q=True, frequency="streaming"),
    losses.BPR(num_negatives=2),
    losses.BCE(),
]


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: f"{loss.name}")
def test_every_loss_trains_and_loss_decreases(loss):
    model = small_model(loss, similarity="dot" if loss.name in ("bpr", "bce") else "cosine")
    data = tf.data.Dataset.from_tensor_slices(batch()).batch(B).repeat(40)
    history = model.fit(data, epochs=1, verbose=0)
    first = model.evaluate(tf.data.Dataset.from_tensor_slices(batch()).batch(B), verbose=0, return_dict=True)
    assert np.isfinite(history.history["loss"][0])
    initial = small_model(loss, similarity="dot" if loss.name in ("bpr", "bce") else "cosine")
    start = initial.evaluate(tf.data.Dataset.from_tensor_slices(batch()).batch(B), verbose=0, return_dict=True)
    assert first["loss"] < start["loss"]


def test_train_step_loss_is_the_weighted_in_batch_formula():
    model = small_model(losses.InBatchSoftmax(temperature=0.1, log_q=True))
    data = batch(3)
    query = tf.math.l2_normalize(model.query_tower(data), axis=-1)
    positive = tf.math.l2_normalize(model.candidate_tower(tf.constant(data["target"])), axis=-1)
    counts = model.item_counts
    log_p = np.log(np.maximum(counts, 1e-3) / counts.sum())
    logits = (query.numpy() @ positive.numpy().T) / 0.1 - (np.log(B) + log_p[data["target"]])[None, :]
    same = data["target"][:, None] == data["target"][None, :]
    logits = np.where(same & ~np.eye(B, dtype=bool), -1e9, logits)
    per_example = np.log(np.exp(logits).sum(1)) - np.diag(logits)
    expected = (per_example * data["weight"]).sum() / B
    got = model.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(B), verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx(expected, rel=1e-4)


def test_zero_weights_give_zero_gradient():
    model = small_model(losses.InBatchSoftmax())
    data = batch()
    data["weight"] = np.zeros(B, dtype=np.float32)
    model({"user": data["user"], "history": data["history"]})  # build the towers
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(1.0))
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(B), epochs=1, verbose=0)
    assert before
    for old, new in zip(before, [v.numpy() for v in model.trainable_variables]):
        np.testing.assert_array_equal(old, new)


def test_bad_arguments_are_config_errors():
    items = IdTower(V, D)
    with pytest.raises(ConfigError, match=r"similarity must be one of \('dot', 'cosine'\); got 'l1'"):
        TwoTowerModel(items, items, losses.InBatchSoftmax(), num_items=V, similarity="l1")
    with pytest.raises(ConfigError, match=r"item_counts must have shape \(30,\); got \(3,\)"):
        TwoTowerModel(items, items, losses.InBatchSoftmax(), num_items=V, item_counts=[1, 2, 3])
    with pytest.raises(ConfigError, match=r"loss must be a tfsoft.losses objective"):
        TwoTowerModel(items, items, "softmax", num_items=V)
    with pytest.raises(ConfigError, match=r"temperature must be a positive number; got 0"):
        losses.InBatchSoftmax(temperature=0)


def test_cosine_training_can_score_with_inner_product():
    model = small_model(losses.InBatchSoftmax(), score_similarity="dot")
    data = {k: v for k, v in batch().items() if k in ("user", "history")}
    raw = model.query_tower(data).numpy()
    np.testing.assert_allclose(model(data).numpy(), raw, rtol=1e-6)
    cosine = small_model(losses.InBatchSoftmax())
    np.testing.assert_allclose(np.linalg.norm(cosine(data).numpy(), axis=1), 1.0, rtol=1e-5)


# ------------------------------------------- objective values through the model's step
class FixedNegatives:
    """Stands in for a model's NegativeSampler: returns known ids (shared [N] or [B, N])."""

    def __init__(self, sampler, ids):
        self._sampler, self.ids = sampler, np.asarray(ids, np.int64)
        self.seed = sampler.seed

    def sample(self, num, shape=None, seed=None):
        return tf.constant(self.ids)

    def log_expected_count(self, ids, num_draws):
        return self._sampler.log_expected_count(ids, num_draws)


def prepared_embeddings(model, data, similarity):
    query = model.query_tower({k: tf.constant(v) for k, v in data.items()}).numpy().astype(np.float64)
    table = model.candidate_tower.embedding.embeddings.numpy().astype(np.float64)
    if similarity == "cosine":
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        table = table / np.linalg.norm(table, axis=1, keepdims=True)
    return query, table


@pytest.mark.parametrize("case", ["sampled_shared", "sampled_per_example", "mixed", "bpr", "bce"])
def test_objective_values_through_the_step_match_numpy(case):
    rng = np.random.default_rng(11)
    data = batch(5)
    n = 4
    loss = {"sampled_shared": losses.SampledSoftmax(num_negatives=n, temperature=0.2, log_q=True),
            "sampled_per_example": losses.SampledSoftmax(num_negatives=n, temperature=0.2, log_q=True,
                                                         shared_negatives=False),
            "mixed": losses.InBatchSoftmax(temperature=0.1, log_q=True, num_uniform_negatives=n),
            "bpr": losses.BPR(num_negatives=n), "bce": losses.BCE(num_negatives=n)}[case]
    similarity = "dot" if case in ("bpr", "bce") else "cosine"
    model = small_model(loss, similarity=similarity)
    key = next(iter(model.samplers))
    shape = (B, n) if case in ("sampled_per_example", "bpr", "bce") else (n,)
    ids = rng.integers(1, V, size=shape)
    ids.flat[0] = data["target"][0]  # an accidental hit: masked by every objective
    model.samplers[key] = FixedNegatives(model.samplers[key], ids)
    query, table = prepared_embeddings(model, data, similarity)
    target, weight = data["target"], data["weight"].astype(np.float64)
    sampler_q = model.samplers[key]._sampler.probabilities
    if case.startswith("sampled"):
        neg_log_count = np.log(n * sampler_q[ids])
        expected = ref.sampled_softmax(query, table[target], target, table[ids], ids, 0.2,
                                       neg_log_count=neg_log_count)
    elif case == "mixed":
        counts = model.item_counts
        p = np.maximum(counts, 1e-3) / counts.sum()
        candidate_ids = np.r_[target, ids]
        log_count = np.log(B * p[candidate_ids] + n * sampler_q[candidate_ids])
        expected = ref.in_batch_softmax(query, table[candidate_ids], candidate_ids, np.arange(B), 0.1, log_count)
    else:
        positive = (query * table[target]).sum(1)
        negative = np.einsum("bd,bnd->bn", query, table[ids])
        keep = ids != target[:, None]
        expected = (ref.bpr if case == "bpr" else ref.bce)(positive, negative, keep)
    got = model.evaluate(tf.data.Dataset.from_tensor_slices(data).batch(B), verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx((expected * weight).sum() / B, rel=1e-4)
