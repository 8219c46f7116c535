"""Towers on lastfm_small, several seeds, full-ranking test metrics (mean ± std).

Part "sequential": the CSRec protocol (leave-one-out over windows of 20), in-batch SSM, GRU4Rec,
SASRec, NARM and NextItNet towers (a query per position), Caser, YoutubeDNN and NFM (one example
per interaction), next to the CSRec paper's Base rows, ``item_transition`` and TFRS's
sequential recipe.
Part "graph": per-user 8:1:1 ratio split with seen items excluded (the SSM paper's protocol):
MF, LightGCN and NGCF, each with SSM and BPR.

    .venv/bin/python bench/bench_towers.py --part sequential --seeds 0 1 2
    .venv/bin/python bench/bench_towers.py --part sequential --variants narm nextitnet caser youtube_dnn nfm
    .venv/bin/python bench/bench_towers.py --part graph --seeds 0 1 2
    .venv/bin/python bench/bench_towers.py --part graph --variants ngcf ngcf_bpr mf_bpr
    .venv/bin/python bench/bench_towers.py --part sequential --dataset ml-1m --variants narm caser --epochs 30

Every finished (variant, seed) is written to --out at once and skipped when the command runs
again (``--fresh`` reruns it), so a killed run resumes where it stopped; two processes given
different variants may share one --out (each write merges under a file lock).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import EpochTimer, machine, mean_std, merge_result  # noqa: E402

from tfsoft.config import apply_overrides, parse_config  # noqa: E402
from tfsoft.training import prepare_data, train  # noqa: E402
from tfsoft.validation import evaluate_splits  # noqa: E402

SEQUENTIAL_DATA = {"path": "lastfm_small", "split": "leave_one_out", "window": 20, "max_history": 20}
GRAPH_DATA = {"path": "lastfm_small", "split": "ratio", "ratios": [0.8, 0.1, 0.1], "max_history": 20}

#: In-batch SSM (cosine, τ = 0.1) with 1,024 extra uniform negatives per batch (mixed negative
#: sampling, Yang et al. WWW'20) and logQ correction of the union. Plain in-batch negatives
#: (popular items only) reached 18.4-18.7 % Recall@10 with SASRec here; see the closing note.
MIXED_SSM = {"name": "in_batch", "temperature": 0.1, "mixed_negatives": 1024, "log_q_correction": True}

#: In-batch SSM for id/graph models with logQ correction: plain in-batch SSM pushes popular
#: items down (SSM paper §3.1.1), which cost half the Recall@10 on this split (LightGCN:
#: 0.070 without vs 0.135 with the correction, seed 0).
GRAPH_SSM = {"name": "in_batch", "temperature": 0.1, "log_q_correction": True, "mixed_negatives": 0}

#: one example per interaction (towers with a single query per example), 256 per batch
POSITION_DATA = {**SEQUENTIAL_DATA, "example_mode": "position"}
POSITION_TRAIN = {"batch_size": 256}

PARTS = {
    "sequential": {
        "gru4rec_ssm": {"data": {**SEQUENTIAL_DATA, "example_mode": "user"},
                        "model": {"query_tower": {"name": "gru", "num_layers": 2, "dropout": 0.3}, "embedding_dim": 64},
                        "loss": MIXED_SSM, "train": {"learning_rate": 0.003}},
        "sasrec_ssm": {"data": {**SEQUENTIAL_DATA, "example_mode": "user"},
                       "model": {"query_tower": {"name": "sasrec", "num_blocks": 2, "num_heads": 2, "dropout": 0.3},
                                 "embedding_dim": 64},
                       "loss": MIXED_SSM},
        "narm": {"data": {**SEQUENTIAL_DATA, "example_mode": "user"},
                 "model": {"query_tower": {"name": "narm", "hidden_units": 128, "embedding_dropout": 0.25,
                                           "dropout": 0.5}, "embedding_dim": 64},
                 "loss": MIXED_SSM, "train": {"learning_rate": 0.003}},  # screen: val 22.09/13.57 vs 21.34/13.06
        "nextitnet": {"data": {**SEQUENTIAL_DATA, "example_mode": "user"},
                      "model": {"query_tower": {"name": "nextitnet", "dilations": (1, 2, 4, 8), "num_repeats": 1,
                                                "kernel_size": 3, "dropout": 0.3}, "embedding_dim": 64},
                      # screen (bench/results/towers_screen_lastfm.json, val R@10/N@10): no dropout 12.29/8.28,
                      # 0.3 16.73/10.29, 0.5 15.85/9.00, 0.3 + 2 repeats 15.38/9.30, 0.3 + lr 3e-3 18.63/11.61
                      "loss": MIXED_SSM, "train": {"learning_rate": 0.003}},
        "caser": {"data": POSITION_DATA,
                  "model": {"query_tower": {"name": "caser", "max_length": 5, "num_horizontal": 16,
                                            "num_vertical": 4, "dropout": 0.5}, "embedding_dim": 64},
                  "loss": MIXED_SSM, "train": POSITION_TRAIN},
        "youtube_dnn": {"data": POSITION_DATA,
                        "model": {"query_tower": {"name": "youtube_dnn", "hidden_units": (256, 128)},
                                  "embedding_dim": 64},
                        "loss": MIXED_SSM, "train": POSITION_TRAIN},
        "nfm": {"data": POSITION_DATA,
                "model": {"query_tower": {"name": "nfm", "hidden_units": (64,), "dropout": 0.3,
                                          "use_user_embedding": True}, "embedding_dim": 64},
                "loss": MIXED_SSM, "train": {**POSITION_TRAIN, "learning_rate": 0.003}},  # val 11.31/5.55 vs 10.21/4.80
    },
    "graph": {
        "mf_ssm": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "id"}, "embedding_dim": 64}, "loss": GRAPH_SSM},
        "lightgcn_ssm": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "lightgcn", "num_layers": 3}, "embedding_dim": 64},
                         "loss": GRAPH_SSM},
        "lightgcn_bpr": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "lightgcn", "num_layers": 3}, "embedding_dim": 64,
                                                       "similarity": "dot"},
                         "loss": {"name": "bpr", "num_negatives": 1}},
        "mf_bpr": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "id"}, "embedding_dim": 64, "similarity": "dot"},
                   "loss": {"name": "bpr", "num_negatives": 1}},
        "ngcf": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "ngcf", "num_layers": 3, "dropout": 0.1},
                                               "embedding_dim": 64},
                 "loss": GRAPH_SSM},
        # no training: the user's whole training history (the split is random, not by time, so
        # item-kNN weighs every history item equally), beside the trained rows
        "popularity": {"data": {**GRAPH_DATA, "max_history": 1000}, "model": {"query_tower": {"name": "popularity"}}},
        "item_knn": {"data": {**GRAPH_DATA, "max_history": 1000},
                     "model": {"query_tower": {"name": "item_knn", "history_items": 1000, "decay": 1.0}}},
        "ngcf_bpr": {"data": GRAPH_DATA, "model": {"query_tower": {"name": "ngcf", "num_layers": 3, "dropout": 0.1},
                                                   "embedding_dim": 64, "similarity": "dot"},
                     "loss": {"name": "bpr", "num_negatives": 1}},
    },
}

REFERENCES = {
    "sequential": {
        "csrec_paper_base": {"gru4rec": {"recall@10": 0.16683, "ndcg@10": 0.10081},
                             "sasrec": {"recall@10": 0.20350, "ndcg@10": 0.11432},
                             "narm": {"recall@10": 0.20260, "ndcg@10": 0.13204},
                             "nextitnet": {"recall@10": 0.15456, "ndcg@10": 0.11564}},
        # deterministic baseline, bench/bench_recipes.py --stage baselines (bench/results/recipes.json)
        "item_transition": {"recall@10": 0.17743, "ndcg@10": 0.10156},
        "tfrs_gru_recipe": {"recall@10": 0.1781, "ndcg@10": 0.1089},
    },
}


#: ML-1M (leave-one-out on file order): the per-sequence towers on windows of 50, the
#: settings of the GRU4Rec/SASRec defaults measured there (bench/results/recipes.json)
ML1M_DATA = {"path": "ml-1m", "split": "leave_one_out", "window": None, "max_history": 50, "example_mode": "window"}
#: the towers with one query per example (Caser, YoutubeDNN, NFM): one example per training
#: interaction of the same split, the history its 50 preceding items
ML1M_POSITION_DATA = {**ML1M_DATA, "example_mode": "position"}

ML1M_REFERENCES = {
    # bench/bench_recipes.py on ML-1M (bench/results/recipes.json): baselines and the tuned defaults
    "item_transition": {"recall@10": 0.18841, "ndcg@10": 0.10521},
    "item_knn": {"recall@10": 0.12070, "ndcg@10": 0.06387},
    "popularity": {"recall@10": 0.02202, "ndcg@10": 0.01051},
    "defaults/gru4rec (1 seed)": {"recall@10": 0.22649, "ndcg@10": 0.12489},
    "defaults/sasrec (1 seed)": {"recall@10": 0.23808, "ndcg@10": 0.12982},
    "tfrs_gru_recipe": {"recall@10": 0.1515, "ndcg@10": 0.074},
}


def variant_specs(part: str, dataset: str) -> dict[str, dict]:
    """The part's variants, with their data section moved to ``dataset`` where it is not lastfm_small."""
    specs = copy.deepcopy(PARTS[part])
    if dataset == "lastfm_small":
        return specs
    if part != "sequential":
        raise SystemExit(f"--dataset {dataset}: only the sequential part runs on it")
    moved = {"user": ML1M_DATA, "position": ML1M_POSITION_DATA}
    trained = {name: spec for name, spec in specs.items() if spec["data"].get("example_mode") in moved}
    for spec in trained.values():
        spec["data"] = dict(moved[spec["data"]["example_mode"]])
    return trained


def summarise(spec: dict, runs: list[dict]) -> dict:
    out = {"config": spec, "runs": runs}
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        out[f"test_{metric}"] = mean_std(r["test"][metric] for r in runs)
    timed = [r["seconds_per_epoch"] for r in runs if "seconds_per_epoch" in r]
    if timed:
        out["seconds_per_epoch"] = mean_std(timed)
    return out


def run_one(config, prepared) -> dict:
    timer = EpochTimer()
    started = time.perf_counter()
    result = train(config, prepared=prepared, callbacks=[timer])
    metrics = evaluate_splits(result.model, config, result.prepared)
    keep = lambda split: {k: v for k, v in metrics[split].items() if "@" in k and k != "long_tail_recall"}
    return {"seed": config.train.seed, "max_epochs": config.train.epochs, "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])), "train_seconds": result.train_seconds,
            "seconds_per_epoch": sum(timer.wall) / len(timer.wall) if timer.wall else 0.0,
            "seconds": time.perf_counter() - started, "test": keep("test"), "validation": keep("validation"),
            "test_long_tail_recall@10": metrics["test"]["long_tail_recall"]["10"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=list(PARTS), required=True)
    parser.add_argument("--dataset", choices=["lastfm_small", "ml-1m"], default="lastfm_small")
    parser.add_argument("--variants", nargs="*", default=None, help="run only these (results of the others in --out are kept)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every chosen variant (a screen); results are kept under "
                             "'VARIANT[KEY=VALUE,...]' so they never mix with the recipe's own rows")
    parser.add_argument("--fresh", action="store_true",
                        help="rerun (variant, seed) pairs already in --out instead of keeping them")
    args = parser.parse_args()
    suffix = "lastfm" if args.dataset == "lastfm_small" else "ml1m"
    out = Path(args.out or f"bench/results/towers_{args.part}_{suffix}.json")
    specs = variant_specs(args.part, args.dataset)
    unknown = sorted(set(args.variants or ()) - set(specs))
    if unknown:
        raise SystemExit(f"--variants: unknown for part {args.part} on {args.dataset}: {unknown}; "
                         f"choose from {sorted(specs)}")
    variants = {name: spec for name, spec in specs.items() if not args.variants or name in args.variants}
    if args.overrides:
        variants = {f"{name}[{','.join(args.overrides)}]": spec for name, spec in variants.items()}
    # every finished run is written at once, so a killed benchmark resumes where it stopped
    results = json.loads(out.read_text()).get("results", {}) if out.is_file() else {}
    header = {"benchmark": f"towers on {args.dataset} ({args.part})", "dataset": args.dataset,
              "max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size,
              "optimizer": "Adam (1e-3 unless the variant sets train)",
              "references": ML1M_REFERENCES if args.dataset == "ml-1m" else REFERENCES.get(args.part, {})}
    prepared_cache = {}
    for name, spec in variants.items():
        recorded = apply_overrides(spec, args.overrides)  # the variant's config as this screen ran it
        done = {} if args.fresh else {r["seed"]: r for r in results.get(name, {}).get("runs", [])}
        runs = list(done.values())
        for seed in args.seeds:
            if seed in done:
                continue
            payload = copy.deepcopy(spec)
            payload["train"] = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 1e-3,
                                "early_stopping_patience": args.patience, **spec.get("train", {}), "seed": seed}
            config = parse_config(apply_overrides(payload, args.overrides))
            key = config.data.model_dump_json()
            if key not in prepared_cache:
                prepared_cache.clear()  # one prepared dataset in memory at a time
                prepared_cache[key] = prepare_data(config.data)
            run = run_one(config, prepared_cache[key])
            runs.append(run)
            # merged into the file as it is now (sorted by seed): another process may be writing
            # other variants or other seeds of this one
            results = merge_result(str(out), {**header, "machine": machine()}, name, runs,
                                   lambda merged: summarise(recorded, merged))
            runs = results[name]["runs"]
            print(f"{name:14s} seed {seed}: test recall@10 {run['test']['recall@10']:.4f} "
                  f"ndcg@10 {run['test']['ndcg@10']:.4f} (best epoch {run['best_epoch']}/{run['epochs_run']}, "
                  f"{run['seconds_per_epoch']:.1f} s/epoch)", flush=True)


if __name__ == "__main__":
    main()
