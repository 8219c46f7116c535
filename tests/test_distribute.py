"""MirroredStrategy over two logical CPUs: in-batch negatives are shared across replicas, so
the distributed loss and gradients equal the single-device ones on the same global batch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    from tfsoft.backend import keras, tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfsoft import losses
    from tfsoft.model import TwoTowerModel
    from tfsoft.optimizers import LazyAdam
    from tfsoft.towers import HistoryPoolingTower, IdTower

    V, D, B = int(sys.argv[3]), 8, 16
    rng = np.random.default_rng(0)
    history = rng.integers(1, V, size=(2 * B, 4))  # two steps: the second one moves other rows
    data = {"user": np.arange(2 * B), "history": history, "target": rng.integers(1, V, size=2 * B)}
    loss = losses.InBatchSoftmax(temperature=0.2, log_q=True, frequency=sys.argv[1])

    def build():
        keras.utils.set_random_seed(0)
        items = IdTower(V, D)
        # sgd: sparse slices; adam: tfsoft's default, fused Adam on densified table gradients
        # (with V=400 the mirrored run keeps the slices: 2 x 40 rows < 400); lazy_adam: LazyAdam
        # on the slices gathered from both replicas
        model = TwoTowerModel(HistoryPoolingTower(V, D, item_embedding=items.embedding), items, loss,
                              num_items=V, item_counts=np.r_[0, np.arange(1, V)])
        optimizer = {"sgd": lambda: keras.optimizers.SGD(0.5), "adam": lambda: keras.optimizers.legacy.Adam(0.05),
                     "lazy_adam": lambda: LazyAdam(0.05)}[sys.argv[2]]()
        model.compile(optimizer=optimizer)
        return model

    out = {}
    for name, strategy in [("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
        with strategy.scope():
            model = build()
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(B, drop_remainder=True)
        loss_value = model.fit(dataset, epochs=1, verbose=0).history["loss"][0]
        out[name] = {"replicas": strategy.num_replicas_in_sync, "loss": loss_value,
                     "weights": [w.tolist() for w in model.get_weights()[:1]]}
    print(json.dumps(out))
    """
)


def run(frequency, optimizer, num_items):
    result = subprocess.run([sys.executable, "-c", SCRIPT, frequency, optimizer, str(num_items)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


import pytest


@pytest.mark.parametrize("frequency, optimizer, num_items", [
    ("counts", "sgd", 40), ("streaming", "sgd", 40), ("counts", "adam", 40), ("counts", "adam", 400),
    ("counts", "lazy_adam", 40)])
def test_mirrored_in_batch_loss_and_update_match_single_device(frequency, optimizer, num_items):
    import numpy as np

    out = run(frequency, optimizer, num_items)
    assert out["mirrored"]["replicas"] == 2 and out["single"]["replicas"] == 1
    assert abs(out["mirrored"]["loss"] - out["single"]["loss"]) < 1e-4 * max(1.0, abs(out["single"]["loss"]))
    np.testing.assert_allclose(out["mirrored"]["weights"][0], out["single"]["weights"][0], atol=1e-5)


# ------------------------------------------- mirrored negatives and per-position training
NEGATIVES_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from tfsoft.distribute import make_strategy
    mirrored = make_strategy("mirrored", cpu_replicas=2)
    from tfsoft.backend import keras, tf
    from tfsoft import losses
    from tfsoft.model import TwoTowerModel
    from tfsoft.sampling import NegativeSampler
    from tfsoft.towers import GRUTower, HistoryPoolingTower, IdTower

    V, D, B, L, N, SEED = 40, 8, 16, 6, 10, 7
    mode = sys.argv[1]
    rng = np.random.default_rng(0)
    history = rng.integers(1, V, size=(B, L))
    if mode == "positions":  # per-position targets with left padding: unequal counts per replica
        for row in range(B):
            history[row, : rng.integers(0, L)] = 0
        target = np.where(history > 0, rng.integers(1, V, size=(B, L)), 0)
        target[: B // 2, : L - 1] = 0  # replica 0's half keeps one position per row, replica 1's up to L
    else:
        target = rng.integers(1, V, size=B)
    data = {"user": np.arange(B), "history": history, "target": target}
    if mode == "positions":
        loss = losses.InBatchSoftmax(temperature=0.2, log_q=True)
    else:
        loss = losses.InBatchSoftmax(temperature=0.2, log_q=True, num_uniform_negatives=N)

    class Fixed(NegativeSampler):
        # the single-device run is fed the negatives the mirrored run drew
        def sample(self, num, shape=None, seed=None):
            return tf.constant(FIXED, tf.int64)

    def build(strategy, fixed=False):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            items = IdTower(V, D)
            if mode == "positions":
                query = GRUTower(V, D, num_layers=1, dropout=0.0, output="sequence", item_embedding=items.embedding)
            else:
                query = HistoryPoolingTower(V, D, item_embedding=items.embedding)
            model = TwoTowerModel(query, items, loss, num_items=V, item_counts=np.r_[0, np.arange(1, V)], seed=SEED)
            if fixed:
                model.samplers["mixed"].__class__ = Fixed
            model.compile(optimizer=keras.optimizers.SGD(0.5))
        return model

    out = {}
    if mode == "negatives":
        # what each replica draws at step 0: its share with its own stateless seed
        sampler = NegativeSampler(np.r_[0.0, np.ones(V - 1)], seed=SEED)
        shares = [sampler.sample(N // 2, seed=tf.constant([SEED, r], tf.int64)).numpy().tolist() for r in (0, 1)]
        out["shares"] = shares
        FIXED = shares[0] + shares[1]
        seen = {}

        @tf.function
        def drawn():
            model = mirrored_model
            def replica_fn():
                from tfsoft.distribute import draw_shared
                return draw_shared(model.samplers["mixed"], N, tf.constant(0, tf.int64), seed=SEED)
            return mirrored.experimental_local_results(mirrored.run(replica_fn))
        mirrored_model = build(mirrored)
        out["drawn"] = [t.numpy().tolist() for t in drawn()]
    runs = [("mirrored", mirrored, False), ("single", tf.distribute.OneDeviceStrategy("/cpu:0"), mode == "negatives")]
    for name, strategy, fixed in runs:
        model = build(strategy, fixed)
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(B, drop_remainder=True)
        value = model.fit(dataset, epochs=1, verbose=0).history["loss"][0]
        out[name] = {"loss": value, "weights": [v.numpy().tolist() for v in model.trainable_variables]}
    print(json.dumps(out))
    """
)


def run_script(script, *argv):
    result = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_replicas_draw_different_negatives_and_the_loss_equals_one_device_fed_them():
    import numpy as np

    out = run_script(NEGATIVES_SCRIPT, "negatives")
    first, second = out["shares"]
    assert first != second  # each replica drew its own share
    assert out["drawn"] == [first + second, first + second]  # gathered: both replicas score the global set
    assert abs(out["mirrored"]["loss"] - out["single"]["loss"]) < 1e-5 * max(1.0, abs(out["single"]["loss"]))
    for got, want in zip(out["mirrored"]["weights"], out["single"]["weights"]):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_per_position_training_with_unequal_replica_batches_equals_one_device():
    import numpy as np

    out = run_script(NEGATIVES_SCRIPT, "positions")
    assert abs(out["mirrored"]["loss"] - out["single"]["loss"]) < 1e-5 * max(1.0, abs(out["single"]["loss"]))
    for got, want in zip(out["mirrored"]["weights"], out["single"]["weights"]):
        np.testing.assert_allclose(got, want, atol=1e-5)


TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from tfsoft.config import load_config
    from tfsoft.training import train
    config = load_config("configs/lastfm_in_batch.yaml", ["distribute.strategy=mirrored", "distribute.cpu_replicas=2",
                         "train.epochs=1", "train.steps_per_epoch=5", "model.embedding_dim=8",
                         "loss.mixed_negatives=64"])
    result = train(config)
    print(json.dumps({"replicas": result.strategy.num_replicas_in_sync, "loss": result.history["loss"],
                      "ndcg": result.history["val_ndcg@10"]}))
    """
)


def test_train_builds_the_strategy_the_config_names():
    import math

    out = run_script(TRAIN_SCRIPT)
    assert out["replicas"] == 2 and math.isfinite(out["loss"][0]) and out["ndcg"][0] > 0


RUN_SCRIPT = textwrap.dedent(
    """
    import json, tempfile
    from tfsoft.config import load_config
    from tfsoft.loaded_run import evaluate_run
    from tfsoft.train_run import train_run
    config = load_config("configs/lastfm_in_batch.yaml", ["distribute.strategy=mirrored", "distribute.cpu_replicas=2",
                         "train.epochs=1", "train.steps_per_epoch=3", "model.embedding_dim=8"])
    run_dir = tempfile.mkdtemp() + "/run"
    metrics = train_run(config, run_dir)
    print(json.dumps({"trained": metrics["validation"]["ndcg@10"], "reloaded": evaluate_run(run_dir)["validation"]["ndcg@10"]}))
    """
)


def test_a_mirrored_run_writes_metrics_that_evaluate_reproduces():
    """`tfsoft train` under MirroredStrategy: the best checkpoint is evaluated as `tfsoft evaluate`
    loads it (it used to crash loading HDF5 weights into the strategy's sync-on-read variables)."""
    out = run_script(RUN_SCRIPT)
    assert out["trained"] > 0 and out["trained"] == out["reloaded"]
