"""An unloaded version is freed when it is unloaded, not at Python's next full garbage collection.

A loaded SavedModel's restored functions hold each other in reference cycles, and with them their
TensorFlow runtime state (registered functions, instantiated kernels: for a ScaNN export, its
searcher). Before :meth:`ModelRepository.refresh` collected them, a server that swapped versions
kept every swapped-out version's functions until a full collection happened to run (on a 100k-item
ScaNN export, RSS grew ~95 MiB per swap for four swaps; now ~33 MiB, see
bench/results/serving_load_soak.json).
"""

import gc
import shutil

import numpy as np
from tensorflow.python.eager import context

from tfsoft.backend import tf
from tfsoft.serving.repository import ModelRepository


class _Tiny(tf.Module):
    def __init__(self):
        super().__init__()
        self.table = tf.Variable(tf.zeros([100, 8]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_id")])
    def serve(self, user_id):
        return {"scores": tf.gather(self.table, user_id)}


def _functions() -> set:
    return set(context.context().list_function_names())


def test_an_unloaded_versions_functions_are_released_at_once(tmp_path):
    module = _Tiny()
    tf.saved_model.save(module, str(tmp_path / "good"), signatures={"serving_default": module.serve})
    base = tmp_path / "base"
    shutil.copytree(tmp_path / "good", base / "1")
    repository = ModelRepository(base, "m", poll_seconds=0)
    assert repository.refresh() == [1]
    shutil.copytree(tmp_path / "good", base / "2")
    gc.collect()
    before = _functions()
    assert repository.refresh() == [2]  # version 1 out (and whatever one-off state the first load made)
    repository.get("m").predict("serving_default", {"user_id": np.asarray([1, 2])})
    version_2 = _functions() - before
    assert version_2, "loading a version registers its functions"
    shutil.copytree(tmp_path / "good", base / "3")
    gc.disable()  # only the repository's own collection may release version 2
    try:
        assert repository.refresh() == [3]
        left = version_2 & _functions()
    finally:
        gc.enable()
    assert not left, f"version 2's functions are still registered after it was unloaded: {sorted(left)[:3]}"
    assert repository.get("m").version == 3
