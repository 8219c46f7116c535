"""Serving speed: ScaNN vs brute force through exported SavedModels, and REST latency of ``tfsoft serve``.

Part 1 — index search over synthetic catalogs of 100k and 1M 64-d candidates (``--sizes``):

* embeddings: CLUSTERED and L2-normalised (:func:`clustered_catalog`): ``--clusters`` Gaussian
  centres on the unit sphere with log-normal cluster weights, each item ``centre + N(0, σ²I)``
  with noise norm ≈ ``--item-noise``, then normalised; row 0 is the OOV row (zeros, never
  returned). Queries are drawn near catalog items (:func:`queries_near`: a random item plus
  noise of norm ≈ ``--query-noise``, normalised), as real query embeddings lie near the items
  users interact with. On iid random vectors (no structure) ANN recall is much lower at the
  same settings; ``iid_reference`` in the JSON measures it on one catalog size.
* per size and index kind (``brute_force``, ``scann``): build seconds; for ScaNN the
  :class:`~tfsoft.export.index.ScannParams` defaults (``resolve()`` sizes them from the
  catalog) tuned by :meth:`~tfsoft.export.index.ScannIndex.tune` (k=10, min recall 0.95) on a
  held-out tuning query set; then a minimal ``tf.Module`` with the signature
  ``search(queries [None, 64] float32) -> {indices, scores}`` (top-10) is saved with
  ``tf.saved_model.save`` (size on disk), loaded back (``import scann`` first) and timed:
  recall@10 against exact search (TF matmul + top_k in chunks) on separate evaluation
  queries, and queries/s at batch 1 and 256 (warm; a fixed number of batches per repeat,
  median of ``--repeats``).

Part 2 — REST latency (p50/p99/mean, top-100, one user per request, in-process
:class:`~tfsoft.serving.server.ModelServer` on 127.0.0.1 and a :class:`~tfsoft.serving.client.Client`):

* (a) lastfm_small: a run of ``configs/lastfm_in_batch.yaml`` trained for 2 epochs, exported
  with :func:`~tfsoft.export.exporter.export_run` (k=100) as brute force and as ScaNN; requests
  are real test users' raw histories;
* (b) a synthetic 100k catalog: a :class:`~tfsoft.export.servable.RetrievalServable` with
  precomputed user vectors (``user_id`` input) and a brute-force or ScaNN (k=100, tuned to
  recall@100 >= 0.95) index, saved as version 1 of a model base path.

Writes bench/results/serving.json (``--quick``: a small smoke run, written to
bench/results/serving_quick.json unless ``--out`` says otherwise).

    .venv/bin/python bench/bench_serving.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import machine, write_result  # noqa: E402 (atomic JSON: temp file + os.replace)

from tfsoft.backend import tf  # noqa: E402
from tfsoft.export.index import BruteForceIndex, ScannIndex, ScannParams, index_recall  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIM = 64
K = 10
REST_K = 100
MIN_RECALL = 0.95
KINDS = ("brute_force", "scann")

FULL = dict(sizes=[100_000, 1_000_000], clusters=2000, tune_queries=500, eval_queries=1000, repeats=5,
            rest_requests=500, rest_warmup=50, rest_catalog=100_000, rest_users=1000, lastfm=True)
QUICK = dict(sizes=[20_000], clusters=200, tune_queries=200, eval_queries=300, repeats=3,
             rest_requests=60, rest_warmup=10, rest_catalog=20_000, rest_users=200, lastfm=False)


# --------------------------------------------------------------------------- synthetic data
def clustered_catalog(num_items: int, dim: int = DIM, num_clusters: int = 2000, item_noise: float = 0.7,
                      seed: int = 0) -> np.ndarray:
    """[num_items + 1, dim] float32 L2-normalised clustered embeddings; row 0 (OOV) is zeros.

    Centres: ``num_clusters`` standard normal vectors, normalised. Cluster of each item drawn
    with probabilities ∝ log-normal(0, 1) weights (uneven cluster sizes, as in real catalogs).
    Item = centre + N(0, (item_noise / √dim)² I) (noise norm ≈ item_noise), normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, size=num_clusters)
    cluster = rng.choice(num_clusters, size=num_items, p=weights / weights.sum())
    out = np.zeros((num_items + 1, dim), np.float32)
    for start in range(0, num_items, 200_000):  # chunks keep the float64 temporaries small
        stop = min(num_items, start + 200_000)
        rows = centres[cluster[start:stop]] + rng.normal(scale=item_noise / np.sqrt(dim), size=(stop - start, dim))
        out[1 + start:1 + stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def queries_near(embeddings: np.ndarray, count: int, query_noise: float = 0.5, seed: int = 1) -> np.ndarray:
    """[count, d] normalised queries: a random catalog item (row >= 1) + noise of norm ≈ query_noise."""
    rng = np.random.default_rng(seed)
    dim = embeddings.shape[1]
    rows = embeddings[rng.integers(1, len(embeddings), count)].astype(np.float64)
    rows += rng.normal(scale=query_noise / np.sqrt(dim), size=rows.shape)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def iid_catalog(num_items: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """[num_items + 1, dim] iid normal vectors, normalised (no structure); row 0 zeros."""
    rng = np.random.default_rng(seed)
    out = np.zeros((num_items + 1, dim), np.float32)
    rows = rng.normal(size=(num_items, dim)).astype(np.float32)
    out[1:] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


# --------------------------------------------------------------------------- exact search, recall
@tf.function(reduce_retracing=True)
def _exact_chunk(queries, candidates, k):
    return tf.math.top_k(tf.matmul(queries, candidates, transpose_b=True), k=k).indices


def exact_neighbors(queries: np.ndarray, embeddings: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Item indices (>= 1) of the exact top-k inner products, [B, k] (TF matmul + top_k in chunks)."""
    candidates = tf.constant(embeddings[1:])
    parts = [_exact_chunk(tf.constant(queries[start:start + chunk]), candidates, tf.constant(k)).numpy()
             for start in range(0, len(queries), chunk)]
    return np.concatenate(parts) + 1


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean ``|found ∩ exact| / k`` per row (k = exact's width)."""
    found, exact = np.asarray(found)[:, :exact.shape[1]], np.asarray(exact)
    return float((found[:, :, None] == exact[:, None, :]).any(axis=2).sum() / exact.size)


# --------------------------------------------------------------------------- SavedModel path
class SearchModule(tf.Module):
    """An index behind one signature: ``search(queries [None, d] float32) -> {indices, scores}`` [B, k]."""

    def __init__(self, index, k: int, dim: int = DIM):
        super().__init__(name="search_module")
        self.index = index
        self.k = int(k)
        self.search = tf.function(self._search, input_signature=[tf.TensorSpec([None, dim], tf.float32,
                                                                                name="queries")])

    def _search(self, queries):
        indices, scores = self.index.search(queries, self.k)
        return {"indices": indices, "scores": scores}


def directory_size(path: str | Path) -> int:
    return sum(entry.stat().st_size for entry in Path(path).rglob("*") if entry.is_file())


def save_search_model(index, k: int, path: str | Path, dim: int = DIM) -> dict:
    """Save ``index`` as a SavedModel with the ``search`` signature; seconds and bytes on disk."""
    module = SearchModule(index, k, dim)
    started = time.perf_counter()
    tf.saved_model.save(module, str(path), signatures={"search": module.search.get_concrete_function()})
    return {"save_seconds": time.perf_counter() - started, "size_bytes": directory_size(path)}


def load_search_model(path: str | Path):
    """The loaded ``search`` signature (ScaNN's ops registered first) and the load seconds."""
    import scann.scann_ops.py.scann_ops  # noqa: F401  (Scann>* ops, needed by ScaNN SavedModels)

    started = time.perf_counter()
    loaded = tf.saved_model.load(str(path))
    seconds = time.perf_counter() - started
    signature = loaded.signatures["search"]

    def search(queries):
        return signature(queries=queries)["indices"].numpy()

    search.loaded = loaded  # keep the restored objects (variables, ScaNN state) alive
    return search, seconds


def time_qps(search, queries: np.ndarray, batch: int, num_batches: int, repeats: int) -> dict:
    """Warm queries/s of ``search`` at ``batch``: ``repeats`` × ``num_batches`` calls, median."""
    count = max(1, len(queries) // batch)
    batches = [tf.constant(queries[i * batch:(i + 1) * batch]) for i in range(count)]
    if len(queries) < batch:
        batches = [tf.constant(np.resize(queries, (batch, queries.shape[1])))]
    for tensor in batches[:3]:
        search(tensor)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(num_batches):
            search(batches[i % len(batches)])
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"batch": batch, "batches_per_repeat": num_batches, "repeat_seconds": [round(s, 4) for s in seconds],
            "qps": batch * num_batches / median, "ms_per_batch": 1000 * median / num_batches}


def batch_counts(kind: str, num_items: int) -> dict:
    """Batches timed per repeat: ~1-3 s each, fewer where a batch is slow (1M brute force)."""
    scale = max(1.0, num_items / 100_000)
    if kind == "brute_force":
        return {1: max(20, int(300 / scale)), 256: max(3, int(20 / scale))}
    return {1: 300, 256: 20}


def build_index(kind: str, embeddings: np.ndarray, k: int, tune_queries: np.ndarray | None) -> tuple:
    """The index, build seconds, and (ScaNN) the tuning ladder and its seconds."""
    started = time.perf_counter()
    index = BruteForceIndex(embeddings) if kind == "brute_force" else ScannIndex(embeddings, k, ScannParams())
    built = time.perf_counter() - started
    info = {"build_seconds": built}
    if kind == "scann":
        info["scann_params"] = index.params.to_dict()
        info["default_leaves_to_search"] = index.leaves_to_search
        if tune_queries is not None:
            started = time.perf_counter()
            info["tuning"] = index.tune(tune_queries, embeddings, k=k, min_recall=MIN_RECALL)
            info["tune_seconds"] = time.perf_counter() - started
        info["leaves_to_search"] = index.leaves_to_search
    return index, info


def scann_sweep(index: ScannIndex, eval_queries: np.ndarray, exact: np.ndarray, repeats: int,
                counts: dict) -> list[dict]:
    """Recall@10 and queries/s of the in-memory ScaNN index at fewer/more leaves than chosen.

    The tuning only ever searches *more* leaves than the default (a quarter of them); this
    shows what fewer would give. Restores the chosen ``leaves_to_search`` afterwards."""
    chosen, total = index.leaves_to_search, index.params.num_leaves
    rows = []
    for leaves in sorted({max(1, total // part) for part in (128, 64, 32, 16, 8, 4)} | {chosen}):
        index.leaves_to_search = leaves  # read when the function is traced
        function = tf.function(lambda queries: index.search(queries, K)[0],
                               input_signature=[tf.TensorSpec([None, DIM], tf.float32)])

        def search(queries, function=function):
            return function(queries).numpy()

        found = np.concatenate([search(tf.constant(eval_queries[start:start + 256]))
                                for start in range(0, len(eval_queries), 256)])
        rows.append({"leaves_to_search": leaves, "fraction_searched": leaves / total,
                     "recall@10": recall(found, exact),
                     **{f"qps_batch_{batch}": time_qps(search, eval_queries, batch, number, repeats)["qps"]
                        for batch, number in counts.items()}})
    index.leaves_to_search = chosen
    return rows


def bench_index(kind: str, embeddings: np.ndarray, tune_queries: np.ndarray, eval_queries: np.ndarray,
                exact: np.ndarray, repeats: int, scratch: Path, counts: dict | None = None,
                sweep: bool = False) -> dict:
    """Part 1 for one catalog and index kind (module docstring)."""
    index, result = build_index(kind, embeddings, K, tune_queries)
    if sweep and kind == "scann":
        result["sweep"] = scann_sweep(index, eval_queries, exact, max(1, min(3, repeats)), {1: 200, 256: 10})
    path = scratch / f"{kind}_{len(embeddings) - 1}"
    result.update(save_search_model(index, K, path))
    del index
    search, result["load_seconds"] = load_search_model(path)
    started = time.perf_counter()
    first = search(tf.constant(eval_queries[:1]))
    result["first_call_seconds"] = time.perf_counter() - started
    assert first.shape == (1, K)
    found = np.concatenate([search(tf.constant(eval_queries[start:start + 256]))
                            for start in range(0, len(eval_queries), 256)])
    result["recall@10"] = recall(found, exact)
    counts = counts or batch_counts(kind, len(embeddings) - 1)
    result["qps"] = {f"batch_{batch}": time_qps(search, eval_queries, batch, number, repeats)
                     for batch, number in counts.items()}
    result["size_mb"] = result["size_bytes"] / 2**20
    del search
    shutil.rmtree(path, ignore_errors=True)
    return result


def iid_reference(num_items: int, num_queries: int, seed: int = 0) -> dict:
    """ScaNN recall@10 (defaults, no tuning) on iid random catalog and queries: no structure."""
    embeddings = iid_catalog(num_items, seed=seed)
    rng = np.random.default_rng(seed + 1)
    queries = rng.normal(size=(num_queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = ScannIndex(embeddings, K, ScannParams())
    exact = exact_neighbors(queries, embeddings, K)
    found = np.concatenate([index.search(tf.constant(queries[s:s + 256]), K)[0].numpy()
                            for s in range(0, num_queries, 256)])
    out = {"items": num_items, "queries": num_queries, "leaves_to_search": index.leaves_to_search,
           "num_leaves": index.params.num_leaves, "recall@10_default_params": recall(found, exact)}
    tuned = index.tune(queries[:min(200, num_queries)], embeddings, k=K, min_recall=MIN_RECALL)
    out["tuning_to_0.95"] = tuned
    return out


# --------------------------------------------------------------------------- REST
def rest_latency(base_path: str | Path, inputs: list[dict], warmup: int, count: int, k: int = REST_K) -> dict:
    """Single-request latency (ms) of ``serving_default`` over REST: ``warmup`` then ``count`` requests."""
    from tfsoft.serving.client import Client
    from tfsoft.serving.server import ModelServer

    started = time.perf_counter()
    with ModelServer(base_path, "bench", rest_port=0, poll_seconds=0) as server, \
            Client("127.0.0.1", model="bench", rest_port=server.rest_port, timeout=120, retries=0) as client:
        start_seconds = time.perf_counter() - started
        for i in range(warmup):
            client.predict(inputs[i % len(inputs)])
        times = []
        for i in range(count):
            request = inputs[(warmup + i) % len(inputs)]
            begun = time.perf_counter()
            outputs = client.predict(request)
            times.append(1000 * (time.perf_counter() - begun))
            if i == 0 and outputs["item_ids"].shape != (1, k):
                raise AssertionError(f"expected [1, {k}] item ids; got {outputs['item_ids'].shape}")
    values = np.asarray(times)
    return {"requests": count, "warmup_requests": warmup, "server_start_seconds": start_seconds,
            "p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "mean_ms": float(values.mean()),
            "max_ms": float(values.max())}


def synthetic_servable(base_path: Path, kind: str, embeddings: np.ndarray, user_vectors: np.ndarray,
                       tune_queries: np.ndarray, k: int = REST_K) -> dict:
    """Version 1 of ``base_path``: precomputed users (ids 1..U) + an index over items 1..N (ids = indices)."""
    from tfsoft.export.servable import IdLookup, RetrievalServable, write_id_file

    index, info = build_index(kind, embeddings, k, tune_queries if kind == "scann" else None)
    if kind == "scann":  # recall@100 on the served users' vectors (the tuning used separate queries)
        info["recall@100"] = index_recall(index, user_vectors, embeddings, k)
    with tempfile.TemporaryDirectory(prefix="bench-serving-ids-") as ids:
        num_users, num_items = len(user_vectors), len(embeddings) - 1
        users = write_id_file(Path(ids) / "user_ids.txt", range(1, num_users + 1), "int64")
        items = write_id_file(Path(ids) / "item_ids.txt", range(1, num_items + 1), "int64")
        table = np.concatenate([np.zeros((1, embeddings.shape[1]), np.float32), user_vectors])  # row 0 = OOV
        servable = RetrievalServable(query_tower=None, user_embeddings=table, index=index,
                                     candidate_embeddings=embeddings,
                                     users=IdLookup(users, "int64", name="user_ids"),
                                     items=IdLookup(items, "int64", name="item_ids"),
                                     inputs=("user_id",), max_history=1, k=k, score_similarity="dot")
        version = base_path / "1"
        tf.saved_model.save(servable, str(version), signatures=servable.signatures())
    info["size_mb"] = directory_size(version) / 2**20
    return info


def bench_rest_synthetic(num_items: int, num_users: int, clusters: int, warmup: int, count: int,
                         scratch: Path, seed: int = 0) -> dict:
    """Part 2 (b): REST latency over a synthetic catalog for both index kinds."""
    embeddings = clustered_catalog(num_items, num_clusters=clusters, seed=seed)
    user_vectors = queries_near(embeddings, num_users, seed=seed + 10)
    tune_queries = queries_near(embeddings, 300, seed=seed + 11)
    rng = np.random.default_rng(seed + 12)
    inputs = [{"user_id": np.asarray([user], np.int64)} for user in rng.integers(1, num_users + 1, count + warmup)]
    out = {"items": num_items, "users": num_users, "k": REST_K}
    for kind in KINDS:
        base = scratch / f"rest_{kind}_{num_items}"
        export = synthetic_servable(base, kind, embeddings, user_vectors, tune_queries)
        out[kind] = {"export": export, **rest_latency(base, inputs, warmup, count)}
        shutil.rmtree(base, ignore_errors=True)
    return out


def bench_rest_lastfm(warmup: int, count: int, scratch: Path, epochs: int = 2) -> dict:
    """Part 2 (a): a 2-epoch lastfm_small run exported both ways; real test users' histories."""
    from tensorflow.python.framework import config as tf_config

    from tfsoft.config import load_config
    from tfsoft.export.exporter import export_run
    from tfsoft.train_run import train_run
    from tfsoft.training import prepare_data

    config = load_config(ROOT / "configs" / "lastfm_in_batch.yaml", [f"train.epochs={epochs}"])
    run_dir = scratch / "lastfm_run"
    started = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        metrics = train_run(config, run_dir, stream=quiet)
    train_seconds = time.perf_counter() - started
    tf_config.disable_op_determinism()  # train_run turns it on for the process; timings below run without
    prepared = prepare_data(config.data)
    test = prepared.split.test
    out = {"config": "configs/lastfm_in_batch.yaml", "overrides": [f"train.epochs={epochs}"],
           "train_seconds": train_seconds, "items": int(prepared.items.size), "users": int(prepared.users.size),
           "test_ndcg@10": (metrics.get("test") or {}).get("ndcg@10"), "k": REST_K}
    for kind in KINDS:
        base = scratch / f"lastfm_{kind}"
        with open(os.devnull, "w") as quiet:
            result = export_run(run_dir, base, index=kind, k=REST_K, allow_low_recall=True, stream=quiet)
        raw_users = prepared.users.ids(test.user)
        inputs = []
        for i in range(min(len(test.user), warmup + count)):
            request = {}
            if "user_id" in result.inputs:
                request["user_id"] = np.asarray([raw_users[i]], np.int64)
            if "history" in result.inputs:
                history = prepared.items.ids(test.history[i][-config.data.max_history:])
                request["history"] = np.asarray([history], np.int64)
            inputs.append(request)
        export = {"inputs": result.inputs, "recall@100": result.recall, "recall_queries": result.recall_queries,
                  "size_mb": result.size_bytes / 2**20, "export_seconds": result.seconds}
        if result.scann:
            export["scann"] = result.scann
        out[kind] = {"export": export, **rest_latency(base, inputs, warmup, count)}
        shutil.rmtree(base, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- driver
def run_index_part(sizes, clusters: int, tune_count: int, eval_count: int, repeats: int, scratch: Path,
                   item_noise: float, query_noise: float, seed: int = 0, sweep: bool = True,
                   log=print) -> list[dict]:
    results = []
    for num_items in sizes:
        started = time.perf_counter()
        embeddings = clustered_catalog(num_items, num_clusters=clusters, item_noise=item_noise, seed=seed)
        tune_queries = queries_near(embeddings, tune_count, query_noise, seed=seed + 1)
        eval_queries = queries_near(embeddings, eval_count, query_noise, seed=seed + 2)
        exact = exact_neighbors(eval_queries, embeddings, K)
        entry = {"items": num_items, "data_seconds": time.perf_counter() - started}
        for kind in KINDS:
            entry[kind] = bench_index(kind, embeddings, tune_queries, eval_queries, exact, repeats, scratch,
                                      sweep=sweep)
            result = entry[kind]
            log(f"  {num_items:>9,} {kind:<11} recall@10 {result['recall@10']:.4f}  "
                f"qps b1 {result['qps']['batch_1']['qps']:8.1f}  b256 {result['qps']['batch_256']['qps']:9.1f}  "
                f"build {result['build_seconds']:6.1f} s  size {result['size_mb']:7.1f} MB", flush=True)
        results.append(entry)
        del embeddings
    return results


def table(payload: dict) -> str:
    lines = [f"{'items':>9} {'index':<11} {'recall@10':>9} {'leaves':>11} {'qps b1':>9} {'qps b256':>9} "
             f"{'build s':>8} {'size MB':>8}"]
    for entry in payload["index"]:
        for kind in KINDS:
            r = entry[kind]
            leaves = f"{r['leaves_to_search']}/{r['scann_params']['num_leaves']}" if kind == "scann" else "-"
            lines.append(f"{entry['items']:>9,} {kind:<11} {r['recall@10']:>9.4f} {leaves:>11} "
                         f"{r['qps']['batch_1']['qps']:>9.1f} {r['qps']['batch_256']['qps']:>9.1f} "
                         f"{r['build_seconds']:>8.1f} {r['size_mb']:>8.1f}")
            for row in r.get("sweep", []):
                lines.append(f"{'':>9} {'  sweep':<11} {row['recall@10']:>9.4f} "
                             f"{row['leaves_to_search']:>11} {row['qps_batch_1']:>9.1f} {row['qps_batch_256']:>9.1f}")
    lines.append("")
    lines.append(f"{'REST top-100':<24} {'index':<11} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'recall@100':>10}")
    for name, part in payload["rest"].items():
        for kind in KINDS:
            r = part[kind]
            lines.append(f"{name:<24} {kind:<11} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['mean_ms']:>8.2f} "
                         f"{r['export'].get('recall@100', 1.0):>10.4f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke run (20k items, few requests, no lastfm)")
    parser.add_argument("--sizes", type=int, nargs="+", help="catalog sizes of part 1 (default 100000 1000000)")
    parser.add_argument("--clusters", type=int, help="Gaussian cluster centres of the synthetic catalogs (2000)")
    parser.add_argument("--item-noise", type=float, default=0.7, help="noise norm of an item around its centre")
    parser.add_argument("--query-noise", type=float, default=0.5, help="noise norm of a query around its item")
    parser.add_argument("--repeats", type=int, help="timed repeats per QPS figure (median; default 5)")
    parser.add_argument("--rest-requests", type=int, help="timed REST requests per server (default 500)")
    parser.add_argument("--rest-catalog", type=int, help="items of the synthetic REST catalog (default 100000)")
    parser.add_argument("--skip-lastfm", action="store_true", help="leave out the lastfm_small REST part")
    parser.add_argument("--no-sweep", action="store_true", help="skip the ScaNN leaves_to_search sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON result file (default bench/results/serving.json)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name in ("sizes", "clusters", "repeats", "rest_requests", "rest_catalog"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.skip_lastfm:
        settings["lastfm"] = False
    out = args.out or str(ROOT / "bench" / "results" / ("serving_quick.json" if args.quick else "serving.json"))

    started = time.perf_counter()
    load_start = list(os.getloadavg())
    payload = {
        "benchmark": "retrieval serving: ScaNN vs brute force through exported SavedModels (recall@10, QPS, "
                     "build time, size) and REST latency of tfsoft serve (top-100, single-user requests)",
        "command": "TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_serving.py"
                   + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
        "machine": {**machine(), "scann": _version("scann"), "load_average_start": load_start},
        "note": "Shared machine: other engineers ran jobs concurrently on the same 2 CPU cores, so timings "
                "are noisy; QPS figures are medians over repeats, latencies percentiles over all requests. "
                "The REST client and the server run in one Python process (GIL shared), over loopback.",
        "data": {
            "generator": "clustered_catalog: num_clusters standard-normal centres normalised to the unit sphere; "
                         "cluster weights log-normal(0, 1); item = centre + N(0, (item_noise/sqrt(d))^2 I), "
                         "L2-normalised; row 0 = OOV (zeros, never returned). queries_near: a uniformly drawn "
                         "catalog item + N(0, (query_noise/sqrt(d))^2 I), L2-normalised. numpy default_rng; "
                         "catalog seed = seed, tuning queries seed + 1, evaluation queries seed + 2.",
            "dim": DIM, "clusters": settings["clusters"], "item_noise": args.item_noise,
            "query_noise": args.query_noise, "seed": args.seed,
            "iid_note": "On iid random vectors (no cluster structure) ANN recall is much lower at the same "
                        "settings: nearest neighbours are barely closer than anything else, so the k-means "
                        "partitions and quantisation do not separate them; see iid_reference.",
        },
        "parameters": {"k": K, "rest_k": REST_K, "min_recall": MIN_RECALL, "tune_queries": settings["tune_queries"],
                       "eval_queries": settings["eval_queries"], "repeats": settings["repeats"],
                       "qps_batches": "batch 1: 300 batches per repeat (brute force: 300/(N/100k), at least 20); "
                                      "batch 256: 20 (brute force: 20/(N/100k), at least 3); 3 warm-up batches",
                       "scann": "ScannParams() defaults resolved from the catalog, then ScannIndex.tune(tuning "
                                "queries, k=10, min_recall=0.95); recall measured on separate evaluation queries",
                       "scann_sweep": "index[*].scann.sweep: the in-memory index (tf.function, not the SavedModel) "
                                      "at num_leaves/128 .. num_leaves/4 leaves: recall@10 on the evaluation "
                                      "queries, queries/s at batch 1 (200 batches) and 256 (10), median of 3",
                       "rest_requests": settings["rest_requests"], "rest_warmup": settings["rest_warmup"]},
    }
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        scratch = Path(scratch)
        print(f"part 1: index search through SavedModels (sizes {settings['sizes']})", flush=True)
        payload["index"] = run_index_part(settings["sizes"], settings["clusters"], settings["tune_queries"],
                                          settings["eval_queries"], settings["repeats"], scratch,
                                          args.item_noise, args.query_noise, args.seed, sweep=not args.no_sweep)
        payload["iid_reference"] = iid_reference(min(settings["sizes"]), settings["eval_queries"], args.seed)
        print(f"  iid reference ({payload['iid_reference']['items']:,} items): ScaNN default recall@10 "
              f"{payload['iid_reference']['recall@10_default_params']:.4f}", flush=True)
        print("part 2: REST latency", flush=True)
        payload["rest"] = {}
        if settings["lastfm"]:
            payload["rest"]["lastfm_small"] = bench_rest_lastfm(settings["rest_warmup"], settings["rest_requests"],
                                                                scratch)
        name = f"synthetic_{settings['rest_catalog'] // 1000}k"
        payload["rest"][name] = bench_rest_synthetic(settings["rest_catalog"], settings["rest_users"],
                                                     settings["clusters"], settings["rest_warmup"],
                                                     settings["rest_requests"], scratch, args.seed)
    payload["machine"]["load_average_end"] = list(os.getloadavg())
    payload["total_seconds"] = time.perf_counter() - started
    print(table(payload))
    write_result(out, payload)
    return payload


def _version(package: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
