import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.sampling import StreamingFrequencyEstimator, bucket_of

ROOT = Path(__file__).resolve().parents[2]


def reference_hash(y, num_buckets, hashing):
    if hashing == "multiplicative":
        y = (y % (2**31 - 1)) * 48271 % (2**31 - 1)
    return y % num_buckets


def algorithm2(batches, num_buckets, alpha, initial_delta, hashing="mod", duplicates="sequential"):
    """Yi et al. 2019, Algorithm 2, literally: one item at a time, in batch order (float64)."""
    last = np.zeros(num_buckets, dtype=np.int64)
    delta = np.full(num_buckets, initial_delta, dtype=np.float64)
    for t, batch in enumerate(batches, start=1):
        seen_now = set()
        for y in batch:
            if y == 0:
                continue  # padding is never counted
            h = reference_hash(int(y), num_buckets, hashing)
            if duplicates == "once" and h in seen_now:
                continue
            seen_now.add(h)
            if last[h] != 0:  # a never-seen bucket only records its first step
                delta[h] = (1 - alpha) * delta[h] + alpha * (t - last[h])
            last[h] = t
    return last, delta


@pytest.mark.parametrize(
    "hashing, duplicates", [("mod", "sequential"), ("multiplicative", "sequential"), ("mod", "once")]
)
def test_matches_numpy_algorithm2_with_duplicates_and_collisions(hashing, duplicates):
    rng = np.random.default_rng(1)
    batches = rng.integers(0, 40, size=(60, 12))  # ids 0..39 into 7 buckets: duplicates and collisions
    estimator = StreamingFrequencyEstimator(
        num_buckets=7, learning_rate=0.1, initial_delta=25.0, hashing=hashing, duplicates=duplicates
    )
    update = tf.function(estimator.update)
    for batch in batches:
        update(tf.constant(batch, tf.int32))
    last, delta = algorithm2(batches, 7, 0.1, 25.0, hashing, duplicates)
    np.testing.assert_array_equal(estimator.last_seen.numpy(), last)
    np.testing.assert_allclose(estimator.delta.numpy(), delta, rtol=2e-6)
    assert int(estimator.step.numpy()) == 60


def test_duplicates_within_a_batch_hand_computed():
    alpha = 0.5
    estimator = StreamingFrequencyEstimator(num_buckets=11, learning_rate=alpha, initial_delta=8.0)
    estimator.update(tf.constant([3, 3, 3, 5]))  # t=1: first sight: A <- 1; two more 3s give gap 0
    np.testing.assert_allclose(estimator.delta.numpy()[[3, 5]], [8.0 * 0.5**2, 8.0])
    estimator.update(tf.constant([4]))  # t=2
    estimator.update(tf.constant([3, 5, 5]))  # t=3: gap 2 for both, then one zero gap for 5
    b3 = 0.5 * 2.0 + 0.5 * 2
    b5 = (0.5 * 8.0 + 0.5 * 2) * 0.5
    np.testing.assert_allclose(estimator.delta.numpy()[[3, 5]], [b3, b5])
    np.testing.assert_array_equal(estimator.last_seen.numpy()[[3, 4, 5]], [3, 2, 3])
    np.testing.assert_allclose(estimator.per_step_probability(tf.constant([3, 5])).numpy(), [1 / b3, 1 / b5])
    np.testing.assert_allclose(estimator.probability(tf.constant([3]), 4).numpy(), [1 / (b3 * 4)], rtol=1e-6)


def test_once_mode_counts_an_item_once_per_step():
    estimator = StreamingFrequencyEstimator(num_buckets=11, learning_rate=0.5, initial_delta=8.0, duplicates="once")
    estimator.update(tf.constant([3, 3, 3]))
    estimator.update(tf.constant([3, 3]))
    np.testing.assert_allclose(estimator.delta.numpy()[3], 0.5 * 8.0 + 0.5 * 1)


def test_unseen_buckets_and_padding():
    estimator = StreamingFrequencyEstimator(num_buckets=13, learning_rate=0.1, initial_delta=500.0)
    estimator.update(tf.constant([0, 0, 2]))
    assert estimator.last_seen.numpy()[0] == 0  # padding skipped
    np.testing.assert_allclose(estimator.per_step_probability(tf.constant([7])).numpy(), [1 / 500.0])
    np.testing.assert_allclose(
        estimator.log_probability(tf.constant([7]), tf.constant(32)).numpy(), [-np.log(500.0 * 32)], rtol=1e-6
    )


def test_bucket_of_matches_reference():
    ids = np.array([0, 1, 2, 100_002, 100_003, 2**40 + 5])
    for hashing in ("mod", "multiplicative"):
        got = bucket_of(tf.constant(ids), 100_003, hashing).numpy()
        np.testing.assert_array_equal(got, [reference_hash(int(y), 100_003, hashing) for y in ids])


@pytest.mark.parametrize("alpha", [0.01, 0.02])
def test_converges_to_per_example_probability_on_stationary_stream(alpha):
    rng = np.random.default_rng(0)
    items = np.arange(1, 1001)
    p = 1.0 / items
    p /= p.sum()
    steps, batch = 3000, 64
    batches = tf.constant(rng.choice(items, size=(steps, batch), p=p))
    estimator = StreamingFrequencyEstimator(num_buckets=1009, learning_rate=alpha, initial_delta=100.0)

    @tf.function
    def run(stream):
        for i in tf.range(steps):
            estimator.update(stream[i])

    run(batches)
    top = items[:20]
    estimated = estimator.probability(tf.constant(top), batch).numpy()
    relative_error = np.abs(estimated / p[:20] - 1)
    assert relative_error.mean() < 0.15, relative_error
    log_p = estimator.log_probability(tf.constant(top), batch).numpy()
    np.testing.assert_allclose(log_p, np.log(estimated), rtol=1e-5)


def test_once_mode_estimates_probability_of_appearing_in_a_batch():
    rng = np.random.default_rng(0)
    items = np.arange(1, 201)
    p = 1.0 / items
    p /= p.sum()
    steps, batch = 2000, 32
    batches = tf.constant(rng.choice(items, size=(steps, batch), p=p))
    estimator = StreamingFrequencyEstimator(num_buckets=211, learning_rate=0.02, initial_delta=50.0, duplicates="once")

    @tf.function
    def run(stream):
        for i in tf.range(steps):
            estimator.update(stream[i])

    run(batches)
    in_batch = 1 - (1 - p[:10]) ** batch
    estimated = estimator.per_step_probability(tf.constant(items[:10])).numpy()
    assert np.abs(estimated / in_batch - 1).mean() < 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_buckets": 0}, r"num_buckets must be an int >= 1; got 0"),
        ({"learning_rate": 0.0}, r"learning_rate \(alpha\) must be in \(0, 1\]; got 0.0"),
        ({"learning_rate": 1.5}, r"got 1.5"),
        ({"initial_delta": -1.0}, r"initial_delta must be .*> 0.*got -1.0"),
        ({"hashing": "md5"}, r"hashing must be 'mod' or 'multiplicative'; got 'md5'"),
        ({"duplicates": "twice"}, r"duplicates must be 'sequential' or 'once'; got 'twice'"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StreamingFrequencyEstimator(**kwargs)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from tfsoft.backend import tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfsoft.sampling import StreamingFrequencyEstimator

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = StreamingFrequencyEstimator(num_buckets=17, learning_rate=0.1, initial_delta=10.0)
    single = StreamingFrequencyEstimator(num_buckets=17, learning_rate=0.1, initial_delta=10.0)
    data = np.random.default_rng(0).integers(0, 60, size=(25, 8))

    @tf.function
    def step(local):
        def replica_fn(local):
            mirrored.update(tf.distribute.get_replica_context().all_gather(local, axis=0))
            return mirrored.log_probability(local, 8)
        return strategy.run(replica_fn, args=(local,))

    for batch in data:
        step(strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(batch[4 * ctx.replica_id_in_sync_group: 4 * ctx.replica_id_in_sync_group + 4])))
        single.update(tf.constant(batch))
    for copy in mirrored.delta.values:
        np.testing.assert_allclose(copy.numpy(), single.delta.numpy(), rtol=1e-6)
    for copy in mirrored.last_seen.values:
        np.testing.assert_array_equal(copy.numpy(), single.last_seen.numpy())
    assert int(mirrored.step.numpy()) == 25
    print("OK")
    """
)


def test_mirrored_strategy_update_with_all_gathered_ids_matches_single_device():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
