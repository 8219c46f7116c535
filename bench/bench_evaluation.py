"""Speed of the full-ranking evaluator (:func:`tfsoft.evaluation.evaluate_full_ranking`).

Cases: 1,090 queries x 3,646 items (lastfm_small's size) and 1,090 x 100,000 items; d = 64,
random normal embeddings, one random target per query, ks = (10, 20), Zipf item counts so
the long-tail breakdown is computed too. Reports the first call (includes tracing) and the
median of ``--repeats`` warm runs after one warm-up. Writes bench/results/evaluation.json.

    .venv/bin/python bench/bench_evaluation.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import machine, write_result  # noqa: E402 (atomic JSON: temp file + os.replace)

from tfsoft.evaluation import SCORE_BUDGET, evaluate_full_ranking  # noqa: E402

CASES = ((1090, 3646), (1090, 100_000))
DIM = 64
KS = (10, 20)


def time_case(num_queries: int, num_items: int, dim: int, repeats: int, seed: int = 0) -> dict:
    """Seconds of one evaluation on random inputs: first call, then ``repeats`` warm runs."""
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(num_queries, dim)).astype(np.float32)
    catalog = rng.normal(size=(num_items, dim)).astype(np.float32)
    targets = rng.integers(1, num_items, size=num_queries)
    counts = np.minimum(rng.zipf(1.5, size=num_items), 10**6).astype(np.int64)
    valid = np.ones(num_items, dtype=bool)
    valid[0] = False  # index 0 = OOV/padding, as in training runs

    def run():
        return evaluate_full_ranking(query, catalog, targets, ks=KS, item_counts=counts, valid_items=valid)

    started = time.perf_counter()
    result = run()  # warm-up (first call: tracing)
    first = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    batch = max(1, min(num_queries, SCORE_BUDGET // num_items))
    return {"queries": num_queries, "items": num_items, "dim": dim, "ks": list(KS),
            "batch_size": batch, "batches": -(-num_queries // batch),
            "first_call_seconds": first, "seconds": seconds, "median_seconds": median,
            "queries_per_second": num_queries / median,
            "recall@10_random_model": result.metrics["recall@10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="warm runs timed per case (default 5)")
    parser.add_argument("--out", default="bench/results/evaluation.json", help="JSON result file")
    args = parser.parse_args()
    cases = []
    for num_queries, num_items in CASES:
        case = time_case(num_queries, num_items, DIM, args.repeats)
        print(f"{num_queries} x {num_items}: median {case['median_seconds']:.3f} s "
              f"({case['queries_per_second']:.0f} queries/s; first call {case['first_call_seconds']:.2f} s)")
        cases.append(case)
    write_result(args.out, {
        "benchmark": "full-ranking evaluation: Recall/NDCG/MRR/HitRate@10,20 + long-tail recall, "
                     "pessimistic ties, valid_items mask",
        "machine": {**machine(), "load_average": list(os.getloadavg())},  # other jobs skew timings
        "repeats": args.repeats, "cases": cases,
        "target": "1090 x 3646 well under 1 s on 2 CPU cores"})


if __name__ == "__main__":
    main()
