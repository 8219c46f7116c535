"""Top-k with per-query exclusions: masking the score matrix vs over-fetching k + E and filtering.

Setting: B = 256 queries, k = 100, d = 64, catalogs of V = 100,000 and 20,000 items
(``--sizes``), E in {0, 100, 1,000, 10,000} excluded item ids per query (``--exclusions``).
Catalog and queries are L2-normalised Gaussian vectors (row 0 = OOV); each query's excluded
ids are distinct random items, a tenth of them (at most 10) taken from its true top-k so the
filter has work to do. Every variant runs inside one ``tf.function`` (unknown batch size);
times are the median of ``--repeats`` warm calls after a warm-up call (the first call traces);
the minimum is recorded too (``min_ms``), the better estimate on a machine shared with other work.

Variants (all return the same [256, 100] indices; the bench checks that they agree):

* ``exact_masked`` — :func:`tfsoft.topk.exact_top_k` with ``exclude``: ``Q·Cᵀ``, one scatter
  of the B·E excluded entries (:func:`tfsoft.topk.mask_excluded`), ``top_k(k)``. What the
  brute-force index serves.
* ``overfetch_new`` — ``top_k(Q·Cᵀ, k + E)`` (an index asked for k + E results, as ScaNN is),
  then :func:`tfsoft.topk.drop_excluded` (sorted exclusions + ``tf.searchsorted``).
* ``overfetch_old`` — the same over-fetch, then the previous ``drop_excluded`` (copied below
  as :func:`old_drop_excluded`), which builds a [B, k+E, E] comparison tensor; skipped where
  that tensor would exceed ``--max-gb`` (default 2 GB).

For each over-fetch variant ``filter_ms`` times the filter alone on the same precomputed
[B, k+E] candidates, and ``total_ms`` the over-fetch plus the filter. Throughput is
``256 / total seconds`` queries/s.

Writes bench/results/exclusion.json (atomically).

    .venv/bin/python bench/bench_exclusion.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import machine, write_result  # noqa: E402 (atomic JSON: temp file + os.replace)

from tfsoft.backend import tf  # noqa: E402
from tfsoft.topk import LOWEST_SCORE, drop_excluded, exact_top_k  # noqa: E402

BATCH, K, DIM = 256, 100, 64
OUT = Path(__file__).resolve().parent / "results" / "exclusion.json"


def old_drop_excluded(indices, scores, excluded, k: int):
    """The previous ``tfsoft.export.servable.drop_excluded`` (before tfsoft.topk), verbatim:
    every result compared with every exclusion, a [B, n, E] tensor."""
    indices = tf.cast(indices, tf.int64)
    hit = tf.reduce_any(tf.equal(indices[:, :, tf.newaxis], excluded[:, tf.newaxis, :]), axis=2)
    drop = tf.logical_or(hit, indices <= 0)
    scores = tf.where(drop, tf.constant(LOWEST_SCORE, scores.dtype), scores)
    indices = tf.where(drop, tf.zeros_like(indices), indices)
    top = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(scores)[1]))
    return tf.gather(indices, top.indices, batch_dims=1), top.values


def normalised(rng, rows: int) -> np.ndarray:
    x = rng.normal(size=(rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exclusions(rng, true_top: np.ndarray, num_items: int, width: int) -> np.ndarray:
    """[B, width] distinct excluded ids per query: up to 10 from the true top-k, the rest random."""
    out = np.zeros((len(true_top), width), np.int64)
    if width == 0:
        return out
    from_top = min(10, width // 10, true_top.shape[1])
    for row, top in enumerate(true_top):
        chosen = set(rng.choice(top, size=from_top, replace=False).tolist()) if from_top else set()
        while len(chosen) < width:
            chosen.update(rng.integers(1, num_items, size=width - len(chosen)).tolist())
        out[row] = rng.permutation(np.fromiter(chosen, np.int64, len(chosen)))[:width]
    return out


def timed(function, args, repeats: int, budget_s: float) -> dict:
    """Median milliseconds of warm calls (one warm-up call first; at least 3 calls, at most
    ``repeats``, stopping early once ``budget_s`` seconds were spent)."""
    result = function(*args)
    _ = [t.numpy() for t in result]
    times = []
    spent = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - spent < budget_s):
        started = time.perf_counter()
        _ = [t.numpy() for t in function(*args)]
        times.append((time.perf_counter() - started) * 1000.0)
    return {"ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3), "runs": len(times),
            "runs_ms": [round(t, 3) for t in times]}, result


def measure(num_items: int, width: int, queries, candidates, exclude, repeats: int, budget_s: float,
            max_gb: float) -> dict:
    spec_q, spec_c = tf.TensorSpec([None, DIM], tf.float32), tf.TensorSpec([None, DIM], tf.float32)
    spec_e = tf.TensorSpec([None, None], tf.int64)
    fetch = min(K + width, num_items - 1)

    masked = tf.function(lambda q, c, e: exact_top_k(q, c, K, e), input_signature=[spec_q, spec_c, spec_e])
    overfetch = tf.function(lambda q, c: exact_top_k(q, c, fetch), input_signature=[spec_q, spec_c])
    spec_i, spec_s = tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.float32)
    new_filter = tf.function(lambda i, s, e: drop_excluded(i, s, e, K), input_signature=[spec_i, spec_s, spec_e])
    old_filter = tf.function(lambda i, s, e: old_drop_excluded(i, s, e, K), input_signature=[spec_i, spec_s, spec_e])
    new_total = tf.function(lambda q, c, e: drop_excluded(*exact_top_k(q, c, fetch), e, K),
                            input_signature=[spec_q, spec_c, spec_e])
    old_total = tf.function(lambda q, c, e: old_drop_excluded(*exact_top_k(q, c, fetch), e, K),
                            input_signature=[spec_q, spec_c, spec_e])

    entry = {"num_items": num_items, "exclusions": width, "fetched": fetch}
    timing, (want_i, _) = timed(masked, (queries, candidates, exclude), repeats, budget_s)
    entry["exact_masked"] = {**timing, "queries_per_s": round(BATCH / timing["ms"] * 1000.0, 1)}

    fetched_timing, fetched = timed(overfetch, (queries, candidates), repeats, budget_s)
    entry["overfetch_top_k_only_ms"] = fetched_timing["ms"]
    agree = {}
    variants = (("overfetch_new", new_filter, new_total), ("overfetch_old", old_filter, old_total))
    for name, filter_fn, total_fn in variants:
        if name == "overfetch_old":
            need_gb = BATCH * fetch * max(width, 1) / 1e9  # the [B, k+E, E] boolean comparison
            if need_gb > max_gb:
                entry[name] = f"skipped: would need {need_gb:.1f} GB for the [B, k+E, E] comparison tensor"
                continue
        filter_timing, (got_i, _) = timed(filter_fn, (fetched[0], fetched[1], exclude), repeats, budget_s)
        total_timing, _ = timed(total_fn, (queries, candidates, exclude), repeats, budget_s)
        entry[name] = {"filter_ms": filter_timing["ms"], "total_ms": total_timing["ms"],
                       "filter_min_ms": filter_timing["min_ms"], "total_min_ms": total_timing["min_ms"],
                       "queries_per_s": round(BATCH / total_timing["ms"] * 1000.0, 1),
                       "filter_runs_ms": filter_timing["runs_ms"], "total_runs_ms": total_timing["runs_ms"]}
        agree[name] = bool(np.array_equal(got_i.numpy(), want_i.numpy()))
    entry["same_results_as_exact_masked"] = agree
    return entry


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 20_000])
    parser.add_argument("--exclusions", type=int, nargs="+", default=[0, 100, 1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=9, help="warm calls per measurement (at most)")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement after 3 calls")
    parser.add_argument("--max-gb", type=float, default=2.0, help="largest [B, k+E, E] tensor the old filter may build")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    results = []
    for num_items in args.sizes:
        candidates = normalised(rng, num_items)
        candidates[0] = 0.0
        queries = normalised(rng, BATCH)
        true_top = exact_top_k(tf.constant(queries), tf.constant(candidates), K)[0].numpy()
        q, c = tf.constant(queries), tf.constant(candidates)
        for width in args.exclusions:
            exclude = tf.constant(exclusions(rng, true_top, num_items, width))
            entry = measure(num_items, width, q, c, exclude, args.repeats, args.budget, args.max_gb)
            results.append(entry)
            new, old = entry["overfetch_new"], entry["overfetch_old"]
            old = old if isinstance(old, str) else "{total_ms:.1f} ms (filter {filter_ms:.1f})".format(**old)
            print(f"V={num_items:>7,} E={width:>6,}  masked {entry['exact_masked']['ms']:9.1f} ms   "
                  f"over-fetch+new {new['total_ms']:9.1f} ms (filter {new['filter_ms']:.1f})   over-fetch+old {old}",
                  flush=True)
    payload = {
        "benchmark": "top-k with per-query exclusions (tfsoft.topk)",
        "settings": {"batch": BATCH, "k": K, "dim": DIM, "sizes": args.sizes, "exclusions": args.exclusions,
                     "repeats": args.repeats, "statistic": "median of warm calls inside tf.function",
                     "max_gb_old_filter": args.max_gb},
        "machine": machine(),
        "note": ("2 CPU cores shared with a training benchmark running at the same time: absolute times are "
                 "noisy, ratios between variants of one row are the meaningful part"),
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_result(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
