"""TIL (triplet importance learning) against BPR on lastfm_small, MF and LightGCN backbones.

The TIL paper's protocol (§5.2): per-user random 8:1:1 split, seen (training) items excluded,
full ranking, Recall@20 / NDCG@20; best epoch by validation Recall@20. Per backbone (MF: ``id``
towers; LightGCN with 1 layer, as the paper) and seed: BPR, BPR with TIL's seen-masked negatives
(``bpr_masked``: TIL's step with every weight 1), TIL-UI, TIL-MI (end-to-end clustering) and
TIL-MIK (periodic K-means), with in-batch SSM (logQ) and ``item_knn`` beside them for context;
``til_ui_norm`` is TIL-UI with the authors' code's batch-mean weight normalisation. Also: the
distribution of the learned weights per epoch (quantiles and histogram of f(s; Λ) on a fixed
sample of training triplets, drawn as a PNG) and the training time per epoch
relative to BPR (validation excluded).

The paper's Last.fm is the 360K release (23k users, 34k items) trained for up to 3,000 epochs:
its absolute numbers do not carry over; only the order (TIL-MI > TIL-UI > BPR, Table 1) is the
target. ``bpr`` is tfsoft's objective; its sampled negatives, like TIL's, mask every training
item of the user (``seen_negative_mask``), so ``bpr_masked`` (TIL's own step with every weight 1)
must reproduce it: a check that TIL's step adds nothing but the weights.

    .venv/bin/python bench/bench_til.py                               # 5 seeds -> bench/results/til_lastfm.json
    .venv/bin/python bench/bench_til.py --seeds 0 --variants bpr til_ui --backbones mf
    .venv/bin/python bench/bench_til.py --part ml1m                   # MF, BPR vs TIL-UI, 3 seeds
    .venv/bin/python bench/bench_til.py --quick --out /tmp/til.json   # smoke run (tests/til/test_bench_til.py)

Results are written after every run and a rerun skips the (backbone, variant, seed) runs the
output file already holds (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, mean_std, write_result  # noqa: E402

from tfsoft.backend import keras, tf  # noqa: E402
from tfsoft.config import parse_config  # noqa: E402
from tfsoft.training import prepare_data, train  # noqa: E402
from tfsoft.validation import evaluate_splits  # noqa: E402

BACKBONES = {"mf": "id", "lightgcn": {"name": "lightgcn", "num_layers": 1}}

#: variant -> (loss section, model keys). Pairwise losses score with the inner product (the paper).
VARIANTS = {
    "bpr": ({"name": "bpr", "num_negatives": 1}, {"similarity": "dot"}),
    # BPR through TIL's step with every weight 1: the same seen-masked negatives as TIL, so the
    # difference to til_ui is the learned weights alone
    "bpr_masked": ({"name": "til", "weighting": "uniform"}, {"similarity": "dot"}),
    "til_ui": ({"name": "til", "strategy": "uni"}, {"similarity": "dot"}),
    # the authors' code's 'norm' trick: weights divided by their batch mean (relative weights only)
    "til_ui_norm": ({"name": "til", "strategy": "uni", "weight_normalisation": "batch_mean"}, {"similarity": "dot"}),
    "til_mi": ({"name": "til", "strategy": "multi", "clustering": "end_to_end"}, {"similarity": "dot"}),
    "til_mik": ({"name": "til", "strategy": "multi", "clustering": "kmeans"}, {"similarity": "dot"}),
    "ssm": ({"name": "in_batch", "temperature": 0.1, "log_q_correction": True, "mixed_negatives": 0},
            {"similarity": "cosine"}),
}
TIL_VARIANTS = ("til_ui", "til_ui_norm", "til_mi", "til_mik")
PARTS = {
    "lastfm": {"dataset": "lastfm_small", "backbones": list(BACKBONES), "variants": list(VARIANTS),
               "seeds": [0, 1, 2, 3, 4], "context": ["popularity", "item_knn"], "out": "bench/results/til_lastfm.json"},
    "ml1m": {"dataset": "ml-1m", "backbones": ["mf"], "variants": ["bpr", "bpr_masked", "til_ui"], "seeds": [0, 1, 2],
             "context": ["popularity", "item_knn"], "out": "bench/results/til_ml1m.json"},
}
#: The no-training baselines beside the trained rows. The split is random, not by time, so
#: item-kNN reads the user's whole training history with equal weights (its sequential default,
#: the 3 most recent items at decay 0.5, suits leave-last-out protocols, not this one).
CONTEXT_TOWERS = {
    "popularity": {"name": "popularity"},
    "item_knn": {"name": "item_knn", "history_items": 1000, "decay": 1.0},
}
CONTEXT_MAX_HISTORY = 1000
QUANTILES = (5, 25, 50, 75, 95)


class TrainTimer(keras.callbacks.Callback):
    """Seconds of each epoch's training steps, from its start to its last batch (the full-ranking
    validation that follows is not counted)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self._last - self._started)


class WeightDistribution(keras.callbacks.Callback):
    """f(s_uij; Λ) on a fixed sample of training triplets after every epoch: quantiles, mean,
    std and a histogram (the weights' spread is what TIL learns; a collapse to 0 shows here)."""

    def __init__(self, features: dict, negatives: np.ndarray, bins: np.ndarray):
        super().__init__()
        self.features = {key: tf.constant(value) for key, value in features.items()}
        self.negatives, self.bins, self.epochs = tf.constant(negatives), bins, []

    def on_epoch_end(self, epoch, logs=None):
        weights, valid = self.model.triplet_weights(self.features, self.negatives)
        values = weights.numpy()[valid.numpy()]
        self.epochs.append({"epoch": epoch + 1, "mean": float(values.mean()), "std": float(values.std()),
                            "quantiles": dict(zip(map(str, QUANTILES), map(float, np.percentile(values, QUANTILES)))),
                            "histogram": np.histogram(np.clip(values, self.bins[0], self.bins[-1]),
                                                      self.bins)[0].tolist()})


def base_config(args, dataset: str) -> dict:
    return {"data": {"path": dataset, "split": "ratio", "ratios": [0.8, 0.1, 0.1]},
            "model": {"embedding_dim": args.dim},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                      "early_stopping_patience": args.patience, "monitor": "val_recall@20",
                      "steps_per_epoch": args.steps_per_epoch},
            "evaluation": {"ks": [10, 20]}}


def variant_config(args, base: dict, backbone: str, variant: str, seed: int, steps_per_epoch: int) -> dict:
    loss, model = VARIANTS[variant]
    loss = dict(loss)
    if loss["name"] == "til":
        loss.update(args.til)
        if loss.get("strategy") == "multi":
            loss.setdefault("pretrain_steps", args.pretrain_epochs * steps_per_epoch)
            loss.setdefault("num_clusters", args.num_clusters)
    return {**base, "loss": loss, "model": {**base["model"], **model, "query_tower": BACKBONES[backbone]},
            "train": {**base["train"], "seed": seed}}


def weight_sample(prepared, size: int, seed: int, num_items: int) -> tuple[dict, np.ndarray]:
    split = prepared.split
    users = np.repeat(np.asarray(split.train_user, np.int64), split.train.lengths)
    items = np.asarray(split.train.values, np.int64)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(users), size=min(size, len(users)), replace=False)
    return {"user": users[rows], "target": items[rows]}, rng.integers(1, num_items, size=(len(rows), 1))


def test_metrics(model, config, prepared) -> dict:
    metrics = evaluate_splits(model, config, prepared)
    return {split: {k: float(v) for k, v in values.items() if "@" in k and k != "long_tail_recall"}
            for split, values in metrics.items()}


def summarise(runs: list[dict]) -> dict:
    summary = {f"test_{metric}": mean_std(run["test"][metric] for run in runs)
               for metric in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")}
    if runs and runs[0].get("epoch_seconds"):
        summary["median_epoch_seconds"] = float(np.median([np.median(run["epoch_seconds"]) for run in runs]))
    return summary


def relative_times(results: dict) -> dict:
    """Median training seconds per epoch of each variant over BPR's, per backbone."""
    out = {}
    for key, entry in results.items():
        backbone, variant = key.split("/")
        reference = results.get(f"{backbone}/bpr", {}).get("median_epoch_seconds")
        if reference and entry.get("median_epoch_seconds"):
            out[key] = entry["median_epoch_seconds"] / reference
    return out


def order_check(results: dict) -> dict:
    """Whether Table 1's order (TIL-MI > TIL-UI > BPR, Recall@20 and NDCG@20 means) holds, and
    whether TIL-UI beats BPR with the same seen-masked negatives (the weights' own effect)."""
    checks = {}
    for backbone in BACKBONES:
        for metric in ("recall@20", "ndcg@20"):
            mean = {variant: results.get(f"{backbone}/{variant}", {}).get(f"test_{metric}", {}).get("mean")
                    for variant in ("bpr", "bpr_masked", "til_ui", "til_mi", "til_mik")}
            pairs = {"til_mi>til_ui": ("til_mi", "til_ui"), "til_ui>bpr": ("til_ui", "bpr"),
                     "til_ui>bpr_masked": ("til_ui", "bpr_masked"), "til_mi>til_mik": ("til_mi", "til_mik")}
            found = {name: mean[a] > mean[b] for name, (a, b) in pairs.items()
                     if mean[a] is not None and mean[b] is not None}
            if found:
                checks[f"{backbone}/{metric}"] = found
    return checks


def plot_weights(results: dict, path: Path) -> None:
    """One panel per (backbone, TIL variant): median, 25–75 % and 5–95 % of the weights per epoch (seed
    of the first run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {key: entry["runs"][0]["weights"] for key, entry in results.items()
              if entry.get("runs") and entry["runs"][0].get("weights")}
    if not panels:
        return
    backbones = [b for b in BACKBONES if any(key.startswith(b + "/") for key in panels)]
    variants = [v for v in TIL_VARIANTS if any(key.endswith("/" + v) for key in panels)]
    figure, axes = plt.subplots(len(backbones), len(variants), figsize=(3.4 * len(variants), 2.8 * len(backbones)),
                                squeeze=False)
    for row, backbone in enumerate(backbones):
        for column, variant in enumerate(variants):
            axis, epochs = axes[row][column], panels.get(f"{backbone}/{variant}")
            axis.set_title(f"{backbone}/{variant}", fontsize=9)
            if not epochs:
                axis.set_axis_off()
                continue
            x = [e["epoch"] for e in epochs]
            q = {name: [e["quantiles"][name] for e in epochs] for name in map(str, QUANTILES)}
            axis.fill_between(x, q["5"], q["95"], alpha=0.2, label="5–95 %")
            axis.fill_between(x, q["25"], q["75"], alpha=0.4, label="25–75 %")
            axis.plot(x, q["50"], label="median")
            axis.plot(x, [e["mean"] for e in epochs], "--", label="mean")
            axis.set_xlabel("epoch", fontsize=8)
        axes[row][0].set_ylabel("weight f(s; Λ)", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=list(PARTS), default="lastfm")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="TIL-MI/MIK: epochs before the clusters")
    parser.add_argument("--num-clusters", type=int, default=60)
    parser.add_argument("--weight-sample", type=int, default=4096, help="training triplets of the weight plot")
    parser.add_argument("--out")
    parser.add_argument("--plot", help="PNG of the weights (default: next to --out)")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in --out")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs of 4 steps, d = 16")
    args = parser.parse_args(argv)
    part = PARTS[args.part]
    args.til = {}
    if args.quick:
        args.seeds = args.seeds or [0]
        args.epochs, args.steps_per_epoch, args.dim, args.batch_size = 2, 4, 16, 256
        args.pretrain_epochs, args.num_clusters, args.weight_sample, args.patience = 1, 4, 256, 2
        args.til = {}
    args.seeds = args.seeds or part["seeds"]
    args.backbones = args.backbones or part["backbones"]
    args.variants = args.variants or part["variants"]
    args.out = args.out or part["out"]
    args.plot = args.plot or str(Path(args.out).with_name(Path(args.out).stem + "_weights.png"))
    return args, part


def main(argv=None) -> dict:
    args, part = parse_args(argv)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() and not args.fresh else {}
    results = previous.get("results", {}) if previous.get("quick", False) == args.quick else {}
    base = base_config(args, part["dataset"])
    prepared = prepare_data(parse_config(base).data)
    examples = len(prepared.split.train.values)
    steps_per_epoch = args.steps_per_epoch or -(-examples // args.batch_size)
    num_items = prepared.items.num_indices
    sample, sample_negatives = weight_sample(prepared, args.weight_sample, 0, num_items)
    payload = {
        "benchmark": f"TIL vs BPR on {part['dataset']}: per-user random 8:1:1 split, seen items excluded, full ranking",
        "command": "python bench/bench_til.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick, "machine": machine(), "seeds": args.seeds,
        "protocol": {"epochs": args.epochs, "patience": args.patience, "monitor": "val_recall@20",
                     "batch_size": args.batch_size, "learning_rate": args.learning_rate, "dim": args.dim,
                     "optimizer": "Adam (OPT_Θ); TIL's OPT_Λ: Adam 1e-3", "l2": 0.0,
                     "steps_per_epoch": steps_per_epoch, "pretrain_epochs (TIL-MI/MIK)": args.pretrain_epochs,
                     "num_clusters": args.num_clusters, "lightgcn_layers": 1,
                     "bpr_negatives": "one per positive; bpr and TIL both mask every training item of the user"},
        "paper": "Wu et al., TIL, Table 1 (Last.fm 360K, 3,000 epochs): MF BPR 17.35/10.47, TIL-UI 20.70/12.48, "
                 "TIL-MI 21.63/13.22; LightGCN BPR 23.31/14.25, TIL-UI 24.14/14.82, TIL-MI 24.85/15.35 "
                 "(R@20/N@20 %); only the order carries over",
    }

    def save():
        payload["results"] = results
        payload["time_per_epoch_relative_to_bpr"] = relative_times(results)
        payload["table1_order"] = order_check(results)
        payload["weights_plot"] = args.plot
        write_result(str(out), payload)

    for backbone in args.backbones:
        for variant in args.variants:
            key = f"{backbone}/{variant}"
            entry = results.setdefault(key, {"config": None, "runs": []})
            for seed in args.seeds:
                if any(run["seed"] == seed for run in entry["runs"]):
                    continue
                payload_config = variant_config(args, base, backbone, variant, seed, steps_per_epoch)
                config = parse_config(payload_config)
                timer = TrainTimer()
                callbacks = [timer]
                weights = None
                if variant in TIL_VARIANTS:
                    bins = np.linspace(0.0, 1.0 if config.loss.weight_activation == "sigmoid" else 5.0, 41)
                    weights = WeightDistribution(sample, sample_negatives, bins)
                    callbacks.append(weights)
                started = time.perf_counter()
                result = train(config, prepared=prepared, callbacks=callbacks)
                metrics = test_metrics(result.model, config, prepared)
                run = {"seed": seed, "best_epoch": result.best_epoch, "epochs_run": len(timer.seconds),
                       "train_seconds": result.train_seconds, "seconds": time.perf_counter() - started,
                       "epoch_seconds": timer.seconds, "test": metrics["test"], "validation": metrics["validation"]}
                if weights is not None:
                    run["weights"] = weights.epochs
                    run["weight_bins"] = weights.bins.tolist()
                entry["config"] = {k: payload_config[k] for k in ("loss", "model")}
                entry["runs"].append(run)
                entry.update(summarise(entry["runs"]))
                print(f"{key:18s} seed {seed}: test R@20 {metrics['test']['recall@20']:.4f} "
                      f"N@20 {metrics['test']['ndcg@20']:.4f} (best epoch {result.best_epoch}, "
                      f"{np.median(timer.seconds):.2f} s/epoch)", flush=True)
                save()
                keras.backend.clear_session()
    for tower in part["context"]:
        key = f"context/{tower}"
        if key in results:
            continue
        spec = {**base, "data": {**base["data"], "max_history": CONTEXT_MAX_HISTORY},
                "model": {**base["model"], "query_tower": CONTEXT_TOWERS[tower]}}
        config = parse_config(spec)
        context_data = prepare_data(config.data)  # histories of CONTEXT_MAX_HISTORY items
        model = train(config, prepared=context_data).model
        results[key] = {"config": {"data": {"max_history": CONTEXT_MAX_HISTORY},
                                   "model": {"query_tower": CONTEXT_TOWERS[tower]}}, "runs": [{"seed": None,
                        "test": test_metrics(model, config, context_data)["test"]}]}
        results[key].update(summarise(results[key]["runs"]))
        save()
    save()
    plot_weights(results, Path(args.plot))
    return payload


if __name__ == "__main__":
    main()
