import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.sampling import LOG_ZERO, NegativeSampler, log_uniform_proposal, unigram_proposal

# 40 real items, a few with zero count (never sampled under beta = 1), index 0 = padding.
COUNTS = np.r_[0, np.random.default_rng(0).integers(0, 50, size=40)]
COUNTS[[5, 17, 40]] = 0
Q = unigram_proposal(COUNTS, beta=1.0)


def chi_square(ids, q):
    observed = np.bincount(ids.ravel(), minlength=q.shape[0])
    assert observed.shape[0] == q.shape[0]
    support = q > 0
    assert observed[~support].sum() == 0  # index 0 and zero-count items never drawn
    expected = ids.size * q[support]
    return float(((observed[support] - expected) ** 2 / expected).sum()), int(support.sum()) - 1


def assert_matches(ids, q):
    statistic, dof = chi_square(ids, q)
    assert statistic < dof + 5 * np.sqrt(2 * dof), (statistic, dof)  # p < 1e-5 for a correct sampler


def test_stateless_draws_match_proposal():
    sampler = NegativeSampler(Q)
    ids = sampler.sample(200_000, seed=tf.constant([1, 2])).numpy()
    assert ids.dtype == np.int64 and ids.shape == (200_000,)
    assert_matches(ids, Q)


def test_stateful_draws_match_proposal_inside_tf_function():
    sampler = NegativeSampler(Q, seed=7)

    @tf.function
    def draw(num):
        return sampler.sample(num)

    ids = np.concatenate([draw(tf.constant(50_000)).numpy() for _ in range(4)])
    assert_matches(ids, Q)


def test_log_uniform_tail_items_are_drawn_at_their_rate():
    q = log_uniform_proposal(100_001)
    ids = NegativeSampler(q).sample(200_000, seed=tf.constant([3, 4])).numpy()
    assert ids.min() >= 1 and ids.max() <= 100_000
    tail = ids > 10_000  # Q(tail) = 1 - log(10001)/log(100001) ≈ 0.2
    expected = 1 - np.log(10_001) / np.log(100_001)
    assert abs(tail.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / ids.size)


def test_never_returns_padding_even_for_uniform_u_at_edges():
    q = np.array([0.0, 0.5, 0.0, 0.5, 0.0])  # trailing zero-probability item
    ids = NegativeSampler(q).sample(20_000, seed=tf.constant([0, 0])).numpy()
    assert set(np.unique(ids)) == {1, 3}


def test_per_example_shape_with_static_and_tensor_shapes():
    sampler = NegativeSampler(Q, seed=1)
    assert sampler.sample(6 * 4, shape=[6, 4]).shape == (6, 4)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def per_example(batch):
        return sampler.sample(batch * 5, shape=tf.stack([batch, 5]))

    ids = per_example(tf.constant(3))
    assert ids.shape == (3, 5) and ids.dtype == tf.int64
    assert np.all(ids.numpy() >= 1)


def test_stateless_seed_is_reproducible_and_global_seed_reproduces_stateful_draws():
    sampler = NegativeSampler(Q, seed=11)
    a = sampler.sample(100, seed=tf.constant([5, 6])).numpy()
    b = sampler.sample(100, seed=tf.constant([5, 6])).numpy()
    c = sampler.sample(100, seed=tf.constant([5, 7])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    tf.random.set_seed(3)
    d = sampler.sample(100).numpy()
    tf.random.set_seed(3)
    np.testing.assert_array_equal(d, sampler.sample(100).numpy())


def test_log_probability_and_log_expected_count():
    sampler = NegativeSampler(Q)
    ids = np.array([[1, 2, 3], [4, 6, 40]])
    log_q = sampler.log_probability(tf.constant(ids, tf.int32))
    assert log_q.dtype == tf.float32 and log_q.shape == (2, 3)
    positive = Q[ids] > 0
    np.testing.assert_allclose(log_q.numpy()[positive], np.log(Q[ids][positive]), rtol=1e-6)
    np.testing.assert_allclose(
        sampler.log_expected_count(ids, 256).numpy()[positive], np.log(256 * Q[ids][positive]), rtol=1e-6
    )
    np.testing.assert_allclose(
        sampler.log_expected_count(ids, tf.constant(256)).numpy()[positive], np.log(256 * Q[ids][positive]), rtol=1e-6
    )


def test_zero_probability_ids_give_large_finite_log():
    sampler = NegativeSampler(Q)
    values = sampler.log_probability(tf.constant([0, 5, 17])).numpy()
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, LOG_ZERO)
    assert np.all(np.isfinite(sampler.log_expected_count(tf.constant([0]), 64).numpy()))


def test_num_indices_and_normalisation():
    sampler = NegativeSampler(np.array([0.0, 2.0, 6.0]))
    assert sampler.num_indices == 3
    np.testing.assert_allclose(sampler.probabilities, [0, 0.25, 0.75])


@pytest.mark.parametrize(
    "probs, match",
    [
        (np.array([0.1, 0.5, 0.4]), r"proposal_probs\[0\].*must be 0.*got 0.1"),
        (np.array([0.0, -0.5, 1.5]), r"finite and >= 0"),
        (np.array([0.0, 0.0, 0.0]), r"positive mass.*all zeros"),
        (np.ones((2, 2)), r"1-D.*got shape \(2, 2\)"),
    ],
)
def test_bad_proposal_raises_config_error(probs, match):
    with pytest.raises(ConfigError, match=match):
        NegativeSampler(probs)


def test_bad_seed_and_num_raise_config_error():
    with pytest.raises(ConfigError, match=r"seed must be an int or None; got 'x'"):
        NegativeSampler(Q, seed="x")
    with pytest.raises(ConfigError, match=r"num must be >= 0; got -1"):
        NegativeSampler(Q).sample(-1)


# --------------------------------------------------------------------------------------------
# NegativeSampler.seed: the base seed of per-replica draws (tfsoft.distribute.draw_shared /
# draw_local; their mirrored behaviour is tested in tests/test_distribute_module.py).


def test_seed_property_is_the_constructor_seed():
    assert NegativeSampler(Q, seed=4).seed == 4
    assert NegativeSampler(Q, seed=np.int64(5)).seed == 5 and isinstance(NegativeSampler(Q, seed=np.int64(5)).seed, int)
    assert NegativeSampler(Q).seed is None


def test_stateless_draw_with_a_replica_seed_is_the_sampler_draw_with_that_seed():
    from tfsoft.distribute import replica_seed

    sampler = NegativeSampler(Q, seed=2)
    np.testing.assert_array_equal(sampler.sample(50, seed=replica_seed(sampler.seed, 7)).numpy(),
                                  sampler.sample(50, seed=tf.constant([2, 7], tf.int64)).numpy())
