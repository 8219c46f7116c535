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
