"""Speed of the full-ranking evaluator: 1,090 queries x 3,646 items (lastfm_small's size) and
1,090 x 100,000 items, d = 64, median of 5 warm runs. Writes bench/results/evaluation.json.

    .venv/bin/python bench/bench_evaluation.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import machine, write_result  # noqa: E402

from tfsoft.evaluation import evaluate_full_ranking  # noqa: E402


def time_case(num_queries: int, num_items: int, dim: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    query = rng.normal(size=(num_queries, dim)).astype(np.float32)
    catalog = rng.normal(size=(num_items, dim)).astype(np.float32)
    targets = rng.integers(1, num_items, size=num_queries)
    counts = rng.zipf(1.5, size=num_items).astype(np.int64)
    run = lambda: evaluate_full_ranking(query, catalog, targets, ks=(10, 20), item_counts=counts)  # noqa: E731
    run()  # warm-up: tracing
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"queries": num_queries, "items": num_items, "dim": dim, "seconds": seconds,
            "median_seconds": median, "queries_per_second": num_queries / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/evaluation.json")
    args = parser.parse_args()
    cases = [time_case(1090, 3646, 64, args.repeats), time_case(1090, 100_000, 64, args.repeats)]
    for case in cases:
        print(f"{case['queries']} x {case['items']}: {case['median_seconds']:.3f} s "
              f"({case['queries_per_second']:.0f} queries/s)")
    write_result(args.out, {"benchmark": "full-ranking evaluation (Recall/NDCG/MRR/HitRate@10,20 + long tail)",
                            "machine": machine(), "cases": cases, "target": "1090 x 3646 well under 1 s"})


if __name__ == "__main__":
    main()
