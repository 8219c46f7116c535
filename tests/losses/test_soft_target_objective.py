"""The soft-target objective (a softmax objective + a soft target over its own candidates)
against float64 NumPy references, its ``soft_target`` config section, and one training run."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.config import apply_overrides, config_to_yaml, parse_config
from tfsoft.errors import ConfigError
from tfsoft.losses.objectives import BPR, FullSoftmax, InBatchSoftmax, SampledSoftmax
from tfsoft.losses.soft_target_objective import SoftTargetLoss
from tfsoft.teachers.sources import PopularityTarget, UniformTarget

from tests.losses.test_objectives import COUNTS, POSITIVE_IDS, SKEWED, V, FakeContext, FixedSampler, run


class CountingContext(FakeContext):
    """FakeContext that also knows the training counts (:data:`COUNTS`)."""

    def item_count(self, ids):
        return tf.gather(tf.constant(COUNTS, tf.float32), tf.cast(ids, tf.int64))


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _expected(logits, keep, positive_index, target, alpha):
    """(1 − α)·CE(onehot_y, p) + α·H(d, p) over the kept columns (float64)."""
    masked = np.where(keep, logits, -np.inf)
    log_p = _log_softmax(masked)
    rows = np.arange(len(logits))
    hard = -log_p[rows, positive_index]
    soft = -np.where(target > 0, target * np.where(keep, log_p, 0.0), 0.0).sum(axis=1)
    return (1 - alpha) * hard + alpha * soft


def _full_logits(query, catalog, tau):
    return query @ catalog.T / tau


@pytest.fixture
def data(rng):
    return rng.normal(size=(len(POSITIVE_IDS), 3)), rng.normal(size=(V, 3))


def test_label_smoothing_on_full_softmax_is_cross_entropy_with_the_smoothed_label(data):
    query, catalog = data
    tau, eps = 0.5, 0.2
    got = run(SoftTargetLoss(FullSoftmax(temperature=tau), UniformTarget(), alpha=eps), query, catalog,
              CountingContext(catalog))
    keep = np.tile(np.arange(V) > 0, (len(query), 1))
    uniform = keep / keep.sum(axis=1, keepdims=True)
    expected = _expected(_full_logits(query, catalog, tau), keep, POSITIVE_IDS, uniform, eps)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling", ["log", "csrec"])
def test_popularity_target_on_full_softmax_is_softrec_pop_plus(data, scaling):
    query, catalog = data
    tau, alpha, temperature = 0.5, 0.4, 2.0
    objective = SoftTargetLoss(FullSoftmax(temperature=tau), PopularityTarget(temperature, scaling), alpha=alpha)
    got = run(objective, query, catalog, CountingContext(catalog))
    real = COUNTS[1:]
    scores = np.log1p(real) if scaling == "log" else 5 * (2 * real / (real.max() + real.min()) - 1)
    popularity = np.r_[0.0, np.exp(_log_softmax(scores / temperature))]  # training counts, OOV row excluded
    target = 0.5 * (popularity[np.newaxis, :] + np.eye(V)[POSITIVE_IDS])
    assert np.all(target.argmax(axis=1) == POSITIVE_IDS)  # SoftRec Definition 1
    keep = np.tile(np.arange(V) > 0, (len(query), 1))
    expected = _expected(_full_logits(query, catalog, tau), keep, POSITIVE_IDS, target, alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_in_batch_soft_target_uses_the_students_masks_and_log_q_correction(data):
    """In-batch + logQ: the target on C is d_j ∝ exp(t_j − log E[count_j]) over the columns the
    student keeps (duplicates of a row's positive masked in both)."""
    query, catalog = data
    positive_ids = np.array([2, 5, 2, 8])  # rows 0 and 2 share item 2: each masks the other's column
    tau, alpha = 0.2, 0.5
    probability = COUNTS / COUNTS.sum()
    objective = SoftTargetLoss(InBatchSoftmax(temperature=tau, log_q=True), UniformTarget(), alpha=alpha)
    ids = tf.constant(positive_ids, tf.int64)
    got = objective.per_example(tf.constant(query), tf.gather(tf.constant(catalog), ids), ids,
                                CountingContext(catalog)).numpy()
    log_count = np.log(len(positive_ids) * probability[positive_ids])
    logits = query @ catalog[positive_ids].T / tau - log_count[np.newaxis, :]
    keep = ~((positive_ids[:, None] == positive_ids[None, :]) & ~np.eye(4, dtype=bool))
    target = np.where(keep, np.exp(-log_count)[np.newaxis, :], 0.0)
    target /= target.sum(axis=1, keepdims=True)
    expected = _expected(logits, keep, np.arange(4), target, alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_sampled_soft_target_covers_the_positive_and_the_negatives(data):
    query, catalog = data
    negatives = np.array([3, 9, 2, 11, 3])
    tau, alpha = 0.5, 0.3
    objective = SoftTargetLoss(SampledSoftmax(num_negatives=5, temperature=tau, log_q=True), UniformTarget(),
                               alpha=alpha)
    context = CountingContext(catalog, {"negatives": FixedSampler(negatives, SKEWED)})
    got = run(objective, query, catalog, context)
    log_count = np.log(5 * SKEWED[negatives])
    ids = np.concatenate([POSITIVE_IDS[:, None], np.tile(negatives, (4, 1))], axis=1)
    logits = np.einsum("bd,bnd->bn", query, catalog[ids]) / tau
    logits[:, 1:] -= log_count
    keep = np.ones_like(logits, bool)
    keep[:, 1:] = negatives[None, :] != POSITIVE_IDS[:, None]  # accidental hits
    correction = np.concatenate([np.zeros((4, 1)), np.tile(log_count, (4, 1))], axis=1)
    target = np.where(keep, np.exp(-correction), 0.0)
    target /= target.sum(axis=1, keepdims=True)
    expected = _expected(logits, keep, np.zeros(4, int), target, alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_the_base_loss(data):
    query, catalog = data
    base = FullSoftmax(temperature=0.5)
    got = run(SoftTargetLoss(base, PopularityTarget(), alpha=0.0), query, catalog, CountingContext(catalog))
    np.testing.assert_allclose(got, run(base, query, catalog, CountingContext(catalog)), rtol=1e-6)


def test_a_pairwise_base_is_refused():
    with pytest.raises(ConfigError, match="soft targets need a softmax loss"):
        SoftTargetLoss(BPR(), UniformTarget())


def test_soft_target_config_section():
    config = parse_config({"soft_target": {"name": "popularity", "temperature": 3, "alpha": 0.2}})
    assert (config.soft_target.name, config.soft_target.temperature, config.soft_target.alpha) == ("popularity", 3.0, 0.2)
    assert parse_config({}).soft_target is None
    assert parse_config({"soft_target": "label_smoothing"}).soft_target.alpha == 0.1
    with pytest.raises(ConfigError, match="'soft_target': key 'tau' is not read by soft-target source 'popularity'"):
        parse_config({"soft_target": {"name": "popularity", "tau": 1}})
    with pytest.raises(ConfigError, match="unknown soft-target source 'teacher_x'"):
        parse_config({"soft_target": "teacher_x"})
    with pytest.raises(ConfigError, match="soft_target 'popularity' reuses a softmax loss's candidates .* got loss 'bpr'"):
        parse_config({"soft_target": "popularity", "loss": "bpr"})
    with pytest.raises(ConfigError, match="alpha"):
        parse_config({"soft_target": {"name": "popularity", "alpha": 1.5}})
    overridden = apply_overrides({"soft_target": "popularity"}, ["soft_target.temperature=5"])
    assert parse_config(overridden).soft_target.temperature == 5.0
    chosen = apply_overrides({}, ["soft_target=label_smoothing", "soft_target.alpha=0.3"])
    assert parse_config(chosen).soft_target.alpha == 0.3
    with pytest.raises(ConfigError, match="no soft_target is set; choose one first with --set soft_target=NAME"):
        apply_overrides({}, ["soft_target.alpha=0.3"])
    assert "name: popularity" in config_to_yaml(config)  # the run records the source
    assert parse_config(__import__("yaml").safe_load(config_to_yaml(config))).soft_target == config.soft_target


def test_training_with_a_soft_target_runs_and_differs_from_the_base():
    from tfsoft.training import train

    base = {"data": {"path": "lastfm_small", "split": "leave_one_out", "window": 20, "max_history": 20},
            "model": {"query_tower": "history_pooling", "embedding_dim": 8},
            "loss": {"name": "in_batch", "mixed_negatives": 64},
            "train": {"epochs": 1, "steps_per_epoch": 5, "batch_size": 64, "early_stopping_patience": None}}
    soft = train(parse_config({**base, "soft_target": {"name": "popularity", "alpha": 0.5}}))
    plain = train(parse_config(base))
    assert np.isfinite(soft.history["loss"][0])
    assert soft.history["loss"][0] != pytest.approx(plain.history["loss"][0], rel=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("base", ["in_batch", "full_softmax"])
@pytest.mark.parametrize("source", ["popularity", "label_smoothing"])
def test_fused_soft_cross_entropy_equals_the_two_term_loss(data, alpha, base, source):
    """Without a student temperature the loss is one cross-entropy with the mixed label
    (1 − α)·onehot + α·d, never written out (under full softmax a row-shared target is one [V]
    row and its term ``q/τ · (Cᵀ d)``); value and gradients (query, catalog) equal the two-term
    form (soft_target_loss, reached by setting the student temperature to τ, ratio 1) with
    masks, logQ and onehot mixing."""
    query, catalog = data
    positive_ids = np.array([2, 5, 2, 8])
    tau = 0.2
    ids = tf.constant(positive_ids, tf.int64)
    objective_base = InBatchSoftmax(temperature=tau, log_q=True) if base == "in_batch" else FullSoftmax(temperature=tau)
    target = PopularityTarget(temperature=3.0) if source == "popularity" else UniformTarget()

    def loss(student_temperature):
        objective = SoftTargetLoss(objective_base, target, alpha=alpha, student_temperature=student_temperature)
        q, c = tf.Variable(query), tf.Variable(catalog)
        context = CountingContext(catalog)
        context._catalog = c  # the candidates read from the variable, so the catalog gets its gradient
        with tf.GradientTape() as tape:
            value = objective.per_example(q, tf.gather(c, ids), ids, context)
            total = tf.reduce_sum(value)
        return [value.numpy()] + [g.numpy() for g in map(tf.convert_to_tensor, tape.gradient(total, [q, c]))]

    for fused, two_term in zip(loss(None), loss(tau)):
        np.testing.assert_allclose(fused, two_term, rtol=1e-5, atol=1e-6)
