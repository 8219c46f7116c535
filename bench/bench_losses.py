"""Compare the retrieval losses on lastfm_small with the CSRec protocol.

Same tower for every loss (history mean-pooling, d = 64, tied item embeddings), same budget
(up to --epochs epochs, best epoch by validation NDCG@10, patience 5), several seeds; test
Recall@10/NDCG@10 reported as mean ± std. Writes bench/results/losses_lastfm.json.

    .venv/bin/python bench/bench_losses.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, mean_std, write_result  # noqa: E402

from tfsoft.config import parse_config  # noqa: E402
from tfsoft.training import prepare_data, train  # noqa: E402
from tfsoft.validation import evaluate_splits  # noqa: E402

#: name -> (loss section, model overrides). Softmax family: cosine + temperature (SSM paper
#: §4.1.3 finds cosine best for SSM); BPR/BCE: inner product, as in the paper's baselines.
VARIANTS = {
    "full_softmax": ({"name": "full_softmax", "temperature": 0.1}, {"similarity": "cosine"}),
    "sampled_softmax_logq": ({"name": "sampled_softmax", "temperature": 0.1, "log_q_correction": True,
                              "num_negatives": 256, "proposal": "unigram", "beta": 1.0}, {"similarity": "cosine"}),
    "in_batch_ssm": ({"name": "in_batch", "temperature": 0.1, "log_q_correction": False, "mixed_negatives": 0},
                     {"similarity": "cosine"}),
    "bpr": ({"name": "bpr", "num_negatives": 1}, {"similarity": "dot"}),
    "bce": ({"name": "bce", "num_negatives": 4}, {"similarity": "dot"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--out", default="bench/results/losses_lastfm.json")
    args = parser.parse_args()

    base = {"data": {"path": "lastfm_small", "split": "leave_one_out", "window": 20, "max_history": 20},
            "model": {"query_tower": "history_pooling", "embedding_dim": 64},
            "train": {"epochs": args.epochs, "batch_size": 256, "learning_rate": 1e-3, "early_stopping_patience": 5}}
    prepared = prepare_data(parse_config(base).data)
    results = {}
    for name in args.variants:
        loss, model = VARIANTS[name]
        runs = []
        for seed in args.seeds:
            config = parse_config({**base, "loss": loss, "model": {**base["model"], **model},
                                   "train": {**base["train"], "seed": seed}})
            started = time.perf_counter()
            result = train(config, prepared=prepared)
            metrics = {split: {k: v for k, v in values.items() if "@" in k and k != "long_tail_recall"}
                       for split, values in evaluate_splits(result.model, config, prepared).items()}
            runs.append({"seed": seed, "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
                         "seconds": time.perf_counter() - started,
                         "test": metrics["test"], "validation": metrics["validation"]})
            print(f"{name:22s} seed {seed}: test recall@10 {metrics['test']['recall@10']:.4f} "
                  f"ndcg@10 {metrics['test']['ndcg@10']:.4f} (best epoch {result.best_epoch}, "
                  f"{result.train_seconds:.0f}s)", flush=True)
        results[name] = {
            "config": {"loss": loss, "model": model},
            "test_recall@10": mean_std(r["test"]["recall@10"] for r in runs),
            "test_ndcg@10": mean_std(r["test"]["ndcg@10"] for r in runs),
            "runs": runs,
        }
    write_result(args.out, {
        "benchmark": "losses on lastfm_small, CSRec protocol (leave-one-out over windows of 20), full ranking",
        "tower": "history mean-pooling, d=64, tied item embeddings; Adam 1e-3, batch 256",
        "machine": machine(), "seeds": args.seeds, "max_epochs": args.epochs, "results": results,
    })


if __name__ == "__main__":
    main()
