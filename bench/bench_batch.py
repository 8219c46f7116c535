"""Batch retrieval speed: ``tfsoft retrieve`` users/s for top-100, brute force vs ScaNN, in process vs Beam.

For each catalog (``--catalogs``):

* ``lastfm_small``: a run of ``configs/lastfm_in_batch.yaml`` trained for 2 epochs and exported with
  :func:`~tfsoft.export.exporter.export_run` (k = 100, brute force and ScaNN tuned to recall@100 >= 0.95);
  the users are the dataset's users with their real histories, repeated under new ids up to ``--users``;
* ``synthetic_<N>``: N 64-d L2-normalised items in clusters stored as contiguous index blocks
  (:func:`clustered_blocks`), a history query tower (mean of the history's item vectors, tied to the
  candidates, cosine), exported as ``tfsoft export`` does (:func:`synthetic_export`) for k = 100;
  each user's history is 10 items of one cluster, so queries lie near the items, as real ones do.

Each configuration runs :func:`tfsoft.batch.job.run_retrieval` over a Parquet input of users
(``user_id``, ``history``), writing Parquet parts, and records users/s and the time in each stage:
``read`` (pyarrow read + parse + shard, in a reader thread), ``embed`` (the ``query_embedding``
signature timed apart on the same batches), ``search`` (the top-k signature minus ``embed``) and
``write`` (result tables + Parquet parts, the latter in a writer thread), as fractions of their sum
(busy seconds summed over the threads running a stage — batches run on ``--model-threads`` threads —
so stages overlap: ``overlap`` = sum / wall time; wall time includes loading the SavedModel).
ScaNN's recall@100 is measured against the brute-force output of the same users. Brute force
over 1M items scores every item for every user (2·d·N flops per user), so it runs on the first
``--brute-force-users`` users only; Beam's DirectRunner runs on ``--beam-users`` users (its
per-element Python overhead, not the model, sets its speed). Every row records its user count.

Writes bench/results/batch.json (``--quick``: tiny catalogs, to bench/results/batch_quick.json
unless ``--out`` says otherwise). The full run (about an hour on 2 cores):

    mkdir -p /work/locks && flock /work/locks/timing.lock \\
        env TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_batch.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

K = 100
DIM = 64
HISTORY = 10
FULL = dict(catalogs=["lastfm_small", "synthetic_100000", "synthetic_1000000"], users=1_000_000, clusters=2000,
            brute_force_users=20_000, beam_users=100_000, batch_size=1024, part_size=100_000, lastfm_epochs=2)
QUICK = dict(catalogs=["synthetic_3000"], users=3000, clusters=50, brute_force_users=1000, beam_users=500,
             batch_size=256, part_size=1000, lastfm_epochs=1)


# --------------------------------------------------------------------------- synthetic catalog and users
def clustered_blocks(num_items: int, num_clusters: int, dim: int = DIM, noise: float = 0.7, seed: int = 0):
    """([num_items + 1, dim] float32 normalised items, row 0 zeros; [C + 1] block starts): cluster c holds
    items ``starts[c] .. starts[c + 1] - 1`` (1-based rows); sizes log-normal, items = centre + noise."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, num_clusters)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * num_items)).astype(np.int64)
    sizes[-1] += num_items - sizes.sum()
    if sizes[-1] < 1:  # tiny catalogs: even blocks
        sizes = np.full(num_clusters, num_items // num_clusters)
        sizes[-1] += num_items - sizes.sum()
    starts = np.concatenate([[1], 1 + np.cumsum(sizes)])
    centres = rng.normal(size=(num_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.zeros((num_items + 1, dim), np.float32)
    for c in range(num_clusters):
        rows = centres[c] + rng.normal(scale=noise / np.sqrt(dim), size=(sizes[c], dim))
        out[starts[c]:starts[c + 1]] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out, starts


def synthetic_users(path: Path, starts: np.ndarray, count: int, seed: int = 1, item_offset: int = 0) -> Path:
    """Parquet of ``count`` users (ids 1..count) with ``HISTORY`` items of one cluster each (raw id =
    row + ``item_offset``)."""
    rng = np.random.default_rng(seed)
    sizes = np.diff(starts)
    cluster = rng.choice(len(sizes), size=count, p=sizes / sizes.sum())
    items = starts[cluster][:, None] + (rng.random((count, HISTORY)) * sizes[cluster][:, None]).astype(np.int64)
    offsets = pa.array(np.arange(0, count * HISTORY + 1, HISTORY, dtype=np.int32))
    table = pa.table({"user_id": pa.array(np.arange(1, count + 1, dtype=np.int64)),
                      "history": pa.ListArray.from_arrays(offsets, pa.array((items + item_offset).ravel()))})
    pq.write_table(table, path, row_group_size=100_000)
    return path


def synthetic_export(base: Path, kind: str, embeddings: np.ndarray, tune_queries: np.ndarray, k: int = K) -> dict:
    """Version 1 of ``base``: mean-of-history tower tied to the candidates (cosine), brute force or ScaNN
    (tuned to recall@k >= 0.95 on ``tune_queries``), ids ``1..N`` (users ``1..U`` do not matter: the
    tower reads the history), with ``tfsoft_export.json`` and the checksum manifest."""
    from tfsoft.backend import tf
    from tfsoft.export.index import build_index, index_recall
    from tfsoft.export.manifest import write_export_manifest
    from tfsoft.export.servable import IdLookup, RetrievalServable, write_id_file
    from tfsoft.export.versions import publish_version

    class MeanTower(tf.Module):
        def __init__(self, table):
            super().__init__(name="mean_tower")
            self.table = tf.Variable(table, trainable=False)

        def __call__(self, features, training=False):
            history = features["history"]
            mask = tf.cast(history > 0, tf.float32)[..., tf.newaxis]
            return tf.reduce_sum(tf.gather(self.table, history) * mask, axis=1) / tf.maximum(
                tf.reduce_sum(mask, axis=1), 1.0)

    started = time.perf_counter()
    index = build_index(kind, embeddings, k)
    tuning = index.tune(tune_queries, embeddings, k, 0.95) if kind == "scann" else None
    recall = tuning[-1]["recall"] if tuning else index_recall(index, tune_queries, embeddings, k)
    num_items = len(embeddings) - 1
    with tempfile.TemporaryDirectory() as scratch, publish_version(base, 1) as (staging, _):
        users = write_id_file(Path(scratch) / "user_ids.txt", [0], "int64")
        items = write_id_file(Path(scratch) / "item_ids.txt", range(1, num_items + 1), "int64")
        servable = RetrievalServable(query_tower=MeanTower(embeddings), user_embeddings=None, index=index,
                                     candidate_embeddings=embeddings, users=IdLookup(users, "int64", name="user_ids"),
                                     items=IdLookup(items, "int64", name="item_ids"), inputs=("history",),
                                     max_history=HISTORY, k=k, score_similarity="cosine")
        signatures = servable.signatures()
        tf.saved_model.save(servable, str(staging), signatures=signatures)
        (staging / "assets.extra").mkdir(exist_ok=True)
        (staging / "assets.extra" / "tfsoft_export.json").write_text(json.dumps({
            "index": kind, "k": k, "inputs": ["history"], "user_id_dtype": "int64", "item_id_dtype": "int64",
            "max_history": HISTORY, "signatures": sorted(signatures), "manifest": "assets.extra/tfsoft_manifest.json"}))
        write_export_manifest(staging)
    return {"index": kind, "recall@100_tuning": recall, "export_seconds": round(time.perf_counter() - started, 2),
            "scann": ({**index.params.to_dict(), "leaves_to_search": index.leaves_to_search,
                       "reorder_num_neighbors": index.reorder_num_neighbors, "tuning": tuning} if kind == "scann"
                      else None)}


# --------------------------------------------------------------------------- measurement
def head_users(path: Path, count: int, scratch: Path) -> Path:
    """The first ``count`` rows of a users file (a smaller input for the slow configurations)."""
    out = scratch / f"users_head_{count}.parquet"
    if not out.exists():
        pq.write_table(pq.read_table(path).slice(0, count), out)
    return out


def embed_seconds(model: str, users: Path, batch_size: int, users_total: int, batches: int = 20) -> float:
    """Time of the ``query_embedding`` signature for ``users_total`` users, from ``batches`` timed batches."""
    from tfsoft.batch.export_info import resolve_export
    from tfsoft.batch.job import PAD
    from tfsoft.batch.reader import read_batches
    from tfsoft.batch.rows import parse_batch
    from tfsoft.batch.runner import SignatureRunner, query_features

    info = resolve_export(model)
    runner = SignatureRunner(info.path, "serving_default")
    inputs = runner.inputs
    timed, count = 0.0, 0
    for number, raw in enumerate(read_batches([users], ["user_id", "history"], batch_size)):
        rows, _ = parse_batch(raw, user_column="user_id", history_column="history", user_dtype=info.user_dtype,
                              item_dtype=info.item_dtype)
        features = query_features(rows, inputs, PAD[info.item_dtype])
        runner.embed(features)  # warm
        started = time.perf_counter()
        runner.embed(features)
        timed += time.perf_counter() - started
        count += len(rows)
        if number + 1 >= batches:
            break
    return timed / max(count, 1) * users_total


def run_local(model: str, users: Path, out: Path, batch_size: int, part_size: int, users_total: int,
              model_threads: int | None = None) -> dict:
    from tfsoft.batch.job import RetrieveOptions, run_retrieval

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = run_retrieval(RetrieveOptions(model=model, input=str(users), output=str(out), k=K, batch_size=batch_size,
                                            part_size=part_size, model_threads=model_threads, progress=False),
                            stream=open(os.devnull, "w"))
    wall = time.perf_counter() - started
    stages = dict(summary.stages)
    embed = min(embed_seconds(model, users, batch_size, users_total), stages["model"])
    stages = {"read": stages["read"], "embed": embed, "search": stages["model"] - embed,
              "write": stages["format"] + stages["write"]}
    total = sum(stages.values())
    return {"users": summary.counts["users_read"], "wall_seconds": round(wall, 3),
            "users_per_second": round(summary.counts["users_read"] / wall, 1),
            "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
            "fractions": {k: round(v / total, 4) for k, v in stages.items()},
            "overlap": round(total / wall, 3)}


def run_beam_direct(model: str, users: Path, out: Path, batch_size: int) -> dict:
    from tfsoft.batch.beam import run_beam
    from tfsoft.batch.job import RetrieveOptions

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = run_beam(RetrieveOptions(model=model, input=str(users), output=str(out), k=K, batch_size=batch_size,
                                       progress=False), ["--runner=DirectRunner"])
    wall = time.perf_counter() - started
    return {"users": summary.counts["users_read"], "wall_seconds": round(wall, 3),
            "users_per_second": round(summary.counts["users_read"] / wall, 1), "runner": "DirectRunner"}


def output_recall(approx: Path, exact: Path) -> float:
    """Mean |approx ∩ exact| / |exact| over the users of the exact output (top-k lists)."""
    import pyarrow.dataset as ds

    exact_rows = ds.dataset(str(exact), format="parquet").to_table(columns=["user_id", "item_ids"]).to_pydict()
    wanted = dict(zip(exact_rows["user_id"], exact_rows["item_ids"]))
    got = ds.dataset(str(approx), format="parquet").to_table(  # only the exact run's users (a head of the input)
        columns=["user_id", "item_ids"], filter=ds.field("user_id").isin(pa.array(exact_rows["user_id"]))).to_pydict()
    hits = [len(set(items) & set(wanted[user])) / max(len(wanted[user]), 1)
            for user, items in zip(got["user_id"], got["item_ids"]) if user in wanted]
    return round(float(np.mean(hits)), 4) if hits else float("nan")


def bench_catalog(name: str, bases: dict, users: Path, settings: dict, scratch: Path) -> dict:
    """Every configuration over one catalog: ScaNN on all users, brute force on a head, Beam on a head."""
    result = {}
    total = pq.read_metadata(users).num_rows
    bf_users = head_users(users, min(total, settings["brute_force_users"]), scratch)
    beam_users = head_users(users, min(total, settings["beam_users"]), scratch)
    batch, part = settings["batch_size"], settings["part_size"]
    for kind, base in bases.items():
        source = users if kind == "scann" else bf_users
        count = total if kind == "scann" else min(total, settings["brute_force_users"])
        print(f"[{name}] {kind} in process, {count:,} users", file=sys.stderr, flush=True)
        result[kind] = {"in_process": run_local(str(base), source, scratch / f"out_{name}_{kind}", batch, part, count,
                                                settings.get("model_threads"))}
        print(f"[{name}] {kind} Beam DirectRunner, {min(total, settings['beam_users']):,} users", file=sys.stderr,
              flush=True)
        result[kind]["beam_direct"] = run_beam_direct(str(base), beam_users, scratch / f"beam_{name}_{kind}", batch)
    if "scann" in bases and "brute_force" in bases:  # recall on the users both ran
        result["scann"]["recall@100_vs_brute_force"] = output_recall(scratch / f"out_{name}_scann",
                                                                     scratch / f"out_{name}_brute_force")
    return result


def lastfm_catalog(settings: dict, scratch: Path) -> tuple[dict, Path, dict]:
    from tensorflow.python.framework import config as tf_config

    from tfsoft.config import load_config
    from tfsoft.export.exporter import export_run
    from tfsoft.train_run import train_run
    from tfsoft.training import prepare_data

    overrides = [f"train.epochs={settings['lastfm_epochs']}"]
    config = load_config(ROOT / "configs" / "lastfm_in_batch.yaml", overrides)
    run_dir = scratch / "lastfm_run"
    with open(os.devnull, "w") as quiet:
        train_run(config, run_dir, stream=quiet)
    tf_config.disable_op_determinism()
    prepared = prepare_data(config.data)
    test = prepared.split.test  # real histories: what precedes each test query
    histories = [prepared.items.ids(test.history[i][-config.data.max_history:]) for i in range(len(test.user))]
    repeats = -(-settings["users"] // len(histories))
    rows = (histories * repeats)[:settings["users"]]
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in rows])]).astype(np.int32)
    table = pa.table({"user_id": pa.array(np.arange(1, len(rows) + 1, dtype=np.int64)),
                      "history": pa.ListArray.from_arrays(pa.array(offsets),
                                                          pa.array([i for h in rows for i in h], pa.int64()))})
    users = scratch / "lastfm_users.parquet"
    pq.write_table(table, users, row_group_size=100_000)
    bases, exports = {}, {}
    for kind in ("brute_force", "scann"):
        with open(os.devnull, "w") as quiet:
            exported = export_run(run_dir, scratch / f"lastfm_{kind}", index=kind, k=K, allow_low_recall=True,
                                  stream=quiet)
        bases[kind] = scratch / f"lastfm_{kind}"
        exports[kind] = {"recall@100_export": exported.recall, "inputs": exported.inputs, "scann": exported.scann}
    return bases, users, {"items": int(prepared.items.size), "distinct_histories": len(histories),
                          "training": overrides, "exports": exports}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny catalogs: a smoke run")
    parser.add_argument("--out", default=None, help="result JSON (default bench/results/batch[_quick].json)")
    parser.add_argument("--catalogs", nargs="+", default=None,
                        help="lastfm_small and/or synthetic_<N> (default: lastfm_small synthetic_100000 synthetic_1000000)")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--model-threads", type=int, default=None,
                        help="tfsoft retrieve --model-threads (default: its own, the CPU count up to 4)")
    parser.add_argument("--kinds", nargs="+", default=["brute_force", "scann"])
    parser.add_argument("--scratch", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.catalogs:
        settings["catalogs"] = args.catalogs
    if args.users:
        settings["users"] = args.users
    if args.model_threads:
        settings["model_threads"] = args.model_threads
    out_path = Path(args.out or ROOT / "bench" / "results" / ("batch_quick.json" if args.quick else "batch.json"))

    import tfsoft.backend  # noqa: F401  (Keras 2 before TensorFlow)
    from common import machine, write_result

    scratch_root = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="bench-batch-"))
    scratch_root.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "batch retrieval (tfsoft retrieve), top-100", "machine": machine(), "settings": settings,
               "quick": args.quick, "catalogs": {}}
    try:
        for name in settings["catalogs"]:
            scratch = scratch_root / name
            scratch.mkdir(exist_ok=True)
            if name == "lastfm_small":
                bases, users, about = lastfm_catalog(settings, scratch)
            else:
                num_items = int(name.split("_", 1)[1])
                embeddings, starts = clustered_blocks(num_items, min(settings["clusters"], num_items // 10))
                users = synthetic_users(scratch / "users.parquet", starts, settings["users"])
                # as many tuning queries as the exporter uses (export.recall_queries, 2,000)
                tune = synthetic_users(scratch / "tune.parquet", starts, 2000, seed=2)
                histories = pq.read_table(tune).column("history").to_pylist()
                queries = np.stack([embeddings[h].mean(axis=0) for h in histories])
                queries /= np.linalg.norm(queries, axis=1, keepdims=True)
                bases, about = {}, {"items": num_items, "clusters": len(starts) - 1, "exports": {}}
                for kind in args.kinds:
                    bases[kind] = scratch / f"export_{kind}"
                    about["exports"][kind] = synthetic_export(bases[kind], kind, embeddings, queries.astype(np.float32))
            bases = {kind: base for kind, base in bases.items() if kind in args.kinds}
            payload["catalogs"][name] = {**about, "users": pq.read_metadata(users).num_rows,
                                         **bench_catalog(name, bases, users, settings, scratch)}
            write_result(str(out_path), payload)  # after every catalog: a long run keeps what it measured
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch_root, ignore_errors=True)
    write_result(str(out_path), payload)
    print(json.dumps({name: {kind: value.get("in_process", {}).get("users_per_second")
                             for kind, value in catalog.items() if isinstance(value, dict) and "in_process" in value}
                      for name, catalog in payload["catalogs"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
