"""Tiny exported versions for the batch tests, written the way ``tfsoft export`` writes them
(RetrievalServable + id assets + ``tfsoft_export.json`` + checksum manifest, published by
rename), with a NumPy reference of their answers.

* ``inputs=("user_id",)``: a precomputed table of user vectors (ID towers);
* ``inputs=("history",)``: a mean-of-item-vectors query tower over the last ``max_history``
  known items (history pooling, exponent 1).

Raw ids: ``int64`` (users 1..U, items 101..100+V) or ``string`` (``u1``.., ``i1``..).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def user_ids(dtype: str, count: int) -> list:
    return list(range(1, count + 1)) if dtype == "int64" else [f"u{i}" for i in range(1, count + 1)]


def item_ids(dtype: str, count: int) -> list:
    return list(range(101, 101 + count)) if dtype == "int64" else [f"i{i}" for i in range(1, count + 1)]


@dataclass
class TinyExport:
    """An exported base path and what its answers are computed from."""

    base: Path
    dtype: str
    inputs: tuple
    users: list
    items: list
    user_table: np.ndarray  # [U + 1, d], row 0 = OOV
    item_query_table: np.ndarray  # [V + 1, d] (history tower)
    candidates: np.ndarray  # [V + 1, d]
    k: int
    max_history: int

    def reference(self, user=None, history=(), k=None, exclude=()) -> tuple[list, list]:
        """NumPy top-k (raw item ids, float64 scores) for one query."""
        k = k or self.k
        if self.inputs == ("user_id",):
            row = self.users.index(user) + 1 if user in self.users else 0
            query = self.user_table[row].astype(np.float64)
        else:
            known = [self.items.index(item) + 1 for item in history if item in self.items][-self.max_history:]
            query = (self.item_query_table[known].astype(np.float64).mean(axis=0) if known
                     else np.zeros(self.candidates.shape[1]))
        scores = self.candidates[1:].astype(np.float64) @ query
        banned = {self.items.index(item) for item in exclude if item in self.items}
        order = [j for j in np.argsort(-scores, kind="stable") if j not in banned][:k]
        return [self.items[j] for j in order], [float(scores[j]) for j in order]


def make_export(base: Path, *, dtype: str = "int64", inputs=("user_id",), num_users: int = 40, num_items: int = 60,
                dim: int = 8, k: int = 10, index: str = "brute_force", max_history: int = 5, seed: int = 0,
                version: int = 1) -> TinyExport:
    """Publish version ``version`` of a tiny model under ``base`` (module docstring)."""
    import tfsoft.backend  # noqa: F401  (Keras 2 before TensorFlow)
    from tfsoft.backend import tf
    from tfsoft.export.index import build_index
    from tfsoft.export.manifest import write_export_manifest
    from tfsoft.export.servable import IdLookup, RetrievalServable, write_id_file
    from tfsoft.export.versions import publish_version

    rng = np.random.default_rng(seed)
    users, items = user_ids(dtype, num_users), item_ids(dtype, num_items)
    user_table = rng.normal(size=(num_users + 1, dim)).astype(np.float32)
    item_query_table = rng.normal(size=(num_items + 1, dim)).astype(np.float32)
    candidates = rng.normal(size=(num_items + 1, dim)).astype(np.float32)
    user_table[0] = 0.0
    item_query_table[0] = 0.0

    class MeanTower(tf.Module):
        def __init__(self):
            super().__init__(name="mean_tower")
            self.table = tf.Variable(item_query_table, trainable=False)

        def __call__(self, features, training=False):
            history = features["history"]
            mask = tf.cast(history > 0, tf.float32)[..., tf.newaxis]
            total = tf.reduce_sum(tf.gather(self.table, history) * mask, axis=1)
            return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    inputs = tuple(inputs)
    with tempfile.TemporaryDirectory() as scratch, publish_version(base, version) as (staging, _):
        user_file = write_id_file(Path(scratch) / "user_ids.txt", users, dtype)
        item_file = write_id_file(Path(scratch) / "item_ids.txt", items, dtype)
        servable = RetrievalServable(
            query_tower=MeanTower() if inputs == ("history",) else None,
            user_embeddings=user_table if inputs == ("user_id",) else None,
            index=build_index(index, candidates, k), candidate_embeddings=candidates,
            users=IdLookup(user_file, dtype, name="user_ids"), items=IdLookup(item_file, dtype, name="item_ids"),
            inputs=inputs, max_history=max_history, k=k, score_similarity="dot")
        signatures = servable.signatures()
        tf.saved_model.save(servable, str(staging), signatures=signatures)
        (staging / "assets.extra").mkdir(exist_ok=True)
        (staging / "assets.extra" / "tfsoft_export.json").write_text(json.dumps({
            "version": version, "index": index, "k": k, "inputs": list(inputs), "user_id_dtype": dtype,
            "item_id_dtype": dtype, "max_history": max_history, "signatures": sorted(signatures),
            "manifest": "assets.extra/tfsoft_manifest.json"}))
        write_export_manifest(staging)
    return TinyExport(Path(base), dtype, inputs, users, items, user_table, item_query_table, candidates, k,
                      max_history)
