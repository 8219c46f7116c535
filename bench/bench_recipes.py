"""Recipes that generalise: GRU4Rec and SASRec over losses, example modes, history length,
temperature, dropout and learning rate, on ML-1M and lastfm_small, beside the baselines that
need no training. Selection is on validation NDCG@10 only; test is recorded, never used.

Every run is one call of :func:`tfsoft.training.train` plus :func:`tfsoft.validation.evaluate_splits`
(the path ``tfsoft train`` publishes through). Results are written after every run, and a
rerun skips the (variant, dataset, seed) triples already in the JSON, so a long grid can be
resumed.

    .venv/bin/python bench/bench_recipes.py --datasets lastfm_small ml-1m --stage baselines
    .venv/bin/python bench/bench_recipes.py --datasets ml-1m --stage losses --seeds 0
    .venv/bin/python bench/bench_recipes.py --variants sasrec/full_softmax/window/h20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import EpochTimer, machine, mean_std, write_result  # noqa: E402

OUT = "bench/results/recipes.json"

#: the data sections: lastfm_small under the CSRec protocol, ML-1M leave-one-out on file order
DATA = {
    "lastfm_small": {"path": "lastfm_small", "split": "leave_one_out", "window": 20},
    "ml-1m": {"path": "ml-1m", "split": "leave_one_out"},
}

LOSSES = {
    "full_softmax": {"name": "full_softmax"},
    "in_batch": {"name": "in_batch"},
    "in_batch_logq": {"name": "in_batch", "log_q_correction": True},
    "mixed_logq": {"name": "in_batch", "mixed_negatives": 1024, "log_q_correction": True},
    "sampled_logq": {"name": "sampled_softmax", "num_negatives": 1024, "log_q_correction": True},
}

REFERENCES = {
    "lastfm_small": {"tfrs_gru_recipe": {"recall@10": 0.1781, "ndcg@10": 0.1089},
                     "csrec_paper_base": {"gru4rec": {"recall@10": 0.16683, "ndcg@10": 0.10081},
                                          "sasrec": {"recall@10": 0.20350, "ndcg@10": 0.11432}}},
    "ml-1m": {"tfrs_gru_recipe": {"recall@10": 0.1515, "ndcg@10": 0.0740},
              "sasrec_full_ce_history_200": {"hit_rate@10": 0.2853,
                                             "source": "Klenitskiy & Vasilev, RecSys'23 (gSASRec paper's CE baseline)"}},
}


def variant(tower: str, loss: str = "full_softmax", mode: str = "window", history: int = 20, lr: float = 1e-3,
            dropout: float | None = None, temperature: float | None = None, batch: int = 128,
            similarity: str = "cosine", tie: bool = False, layers: int | None = None, dim: int = 64) -> dict:
    """A payload (minus data and seed) for a neural variant."""
    query = {"name": tower}
    if dropout is not None:
        query["dropout"] = dropout
    if layers is not None:
        query["num_blocks" if tower == "sasrec" else "num_layers"] = layers
    loss_section = dict(LOSSES[loss])
    if temperature is not None:
        loss_section["temperature"] = temperature
    return {"data": {"max_history": history, "example_mode": mode},
            "model": {"query_tower": query, "similarity": similarity, "tie_item_embeddings": tie,
                      "embedding_dim": dim},
            "loss": loss_section, "train": {"learning_rate": lr, "batch_size": batch}}


def variant_name(tower, loss="full_softmax", mode="window", history=20, lr=1e-3, dropout=None, temperature=None,
                 batch=128, similarity="cosine", tie=False, layers=None, dim=64) -> str:
    parts = [tower, loss, mode, f"h{history}", f"lr{lr:g}"]
    parts += [f"dropout{dropout:g}"] if dropout is not None else []
    parts += [f"t{temperature:g}"] if temperature is not None else []
    parts += [f"b{batch}"] if batch != 128 else []
    parts += [f"s{similarity}"] if similarity != "cosine" else []
    parts += ["tie"] if tie else []
    parts += [f"layers{layers}"] if layers is not None else []
    parts += [f"d{dim}"] if dim != 64 else []
    return "/".join(parts)


def grid(stage: str) -> dict[str, dict]:
    """The variants of one stage of the coordinate search (name -> payload)."""
    specs = []
    if stage == "baselines":
        return {name: {"model": {"query_tower": name}, "data": {"max_history": 20}}
                for name in ("popularity", "item_transition", "item_knn")}
    if stage == "losses":  # which objective, per tower, windowed per-sequence training
        specs = [dict(tower=t, loss=l) for t in ("sasrec", "gru") for l in LOSSES]
    elif stage == "modes":  # position vs windowed examples, with the first stage's best loss
        specs = [dict(tower=t, loss="full_softmax", mode=m) for t in ("sasrec", "gru") for m in ("position", "user")]
    elif stage == "history":
        specs = [dict(tower=t, history=h) for t in ("sasrec", "gru") for h in (50, 100)]
    elif stage == "temperature":
        specs = [dict(tower=t, temperature=x) for t in ("sasrec", "gru") for x in (0.05, 0.2, 1.0)]
    elif stage == "dropout":
        specs = [dict(tower="sasrec", dropout=d) for d in (0.1, 0.5)] + [dict(tower="gru", dropout=d) for d in (0.2, 0.3)]
    elif stage == "similarity":  # full cross-entropy on raw inner products (the SASRec papers' setting)
        specs = [dict(tower=t, similarity="dot", temperature=1.0) for t in ("sasrec", "gru")]
    elif stage == "lr":
        specs = [dict(tower=t, lr=x) for t in ("sasrec", "gru") for x in (3e-3, 3e-4)]
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    return {variant_name(**spec): variant(**spec) for spec in specs}


def defaults(tower: str, loss: str | None = None) -> dict:
    """The acceptance payload: only the tower (and optionally ``loss.name``) set, every other key
    from the defaults and the tower's recipe. Named ``defaults/<tower>[/<loss>]``."""
    payload = {"model": {"query_tower": tower}}
    if loss is not None:
        payload["loss"] = {"name": loss}
    return payload


def parse_name(name: str) -> dict:
    """The payload of a variant name written by :func:`variant_name` or ``defaults/<tower>[/<loss>]``."""
    if name in ("popularity", "item_transition", "item_knn"):
        return grid("baselines")[name]
    if name.startswith("defaults/"):
        return defaults(*name.split("/")[1:])
    tower, loss, mode, history, lr, *rest = name.split("/")
    spec = dict(tower=tower, loss=loss, mode=mode, history=int(history[1:]), lr=float(lr[2:]))
    for part in rest:
        if part == "tie":
            spec["tie"] = True
        elif part.startswith("layers"):
            spec["layers"] = int(part[6:])
        elif part.startswith("d") and part[1:].isdigit():
            spec["dim"] = int(part[1:])
        elif part.startswith("dropout"):
            spec["dropout"] = float(part[7:])
        elif part.startswith("t"):
            spec["temperature"] = float(part[1:])
        elif part.startswith("b"):
            spec["batch"] = int(part[1:])
        elif part.startswith("s"):
            spec["similarity"] = part[1:]
    return variant(**spec)


def load(out: Path) -> dict:
    return json.loads(out.read_text()) if out.is_file() else {}


def run_one(payload: dict, dataset: str, seed: int, epochs: int, patience: int, prepared_cache: dict) -> dict:
    from tfsoft.config import parse_config
    from tfsoft.training import prepare_data, train
    from tfsoft.validation import evaluate_splits

    full = {"data": {**DATA[dataset], **payload.get("data", {})}, "model": payload.get("model", {}),
            **({"loss": payload["loss"]} if "loss" in payload else {}),
            "train": {"epochs": epochs, "early_stopping_patience": patience, **payload.get("train", {}),
                      "seed": seed}}
    config = parse_config(full)
    key = config.data.model_dump_json()
    if key not in prepared_cache:
        prepared_cache.clear()
        prepared_cache[key] = prepare_data(config.data)
    from tfsoft.backend import keras

    timer = EpochTimer()
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(
        f"  epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} val ndcg@10 {logs.get('val_ndcg@10', 0):.4f} "
        f"({timer.wall[-1] if timer.wall else 0:.0f}s)", flush=True))
    started = time.perf_counter()
    result = train(config, prepared=prepared_cache[key], callbacks=[timer, progress])
    metrics = evaluate_splits(result.model, config, result.prepared)
    keep = lambda split: {k: v for k, v in metrics[split].items() if "@" in k and k != "long_tail_recall"}
    return {"seed": seed, "best_epoch": result.best_epoch, "epochs_run": len(result.history.get("loss", [])),
            "train_seconds": result.train_seconds, "seconds": time.perf_counter() - started,
            "seconds_per_epoch": (sum(timer.wall) / len(timer.wall)) if timer.wall else 0.0,
            "examples": result.examples, "validation": keep("validation"), "test": keep("test"),
            "config": json.loads(config.model_dump_json())}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for split in ("validation", "test"):
        for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
            out[f"{split}_{metric}"] = mean_std(r[split][metric] for r in runs)
    out["seconds_per_epoch"] = mean_std(r["seconds_per_epoch"] for r in runs)
    return out


def table(out: Path) -> str:
    """The results as a Markdown table per dataset, best validation NDCG@10 first."""
    lines = []
    for dataset, variants in load(out).get("results", {}).items():
        lines += [f"**{dataset}**", "", "| variant | seeds | val NDCG@10 | test Recall@10 | test NDCG@10 | s/epoch |",
                  "|---|---|---|---|---|---|"]
        ranked = sorted(variants.items(), key=lambda item: -item[1]["summary"]["validation_ndcg@10"]["mean"])
        for name, entry in ranked:
            summary, seeds = entry["summary"], len(entry["runs"])

            def cell(key, scale=100.0):
                value = summary[key]
                return f"{scale * value['mean']:.2f}" + (f" ± {scale * value['std']:.2f}" if seeds > 1 else "")

            lines.append(f"| {name} | {seeds} | {cell('validation_ndcg@10')} | {cell('test_recall@10')} | "
                         f"{cell('test_ndcg@10')} | {summary['seconds_per_epoch']['mean']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["lastfm_small", "ml-1m"], choices=list(DATA))
    parser.add_argument("--stage", default=None,
                        help="baselines, losses, modes, history, temperature, dropout, lr, similarity")
    parser.add_argument("--variants", nargs="*", default=None, help="variant names (see variant_name)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--table", action="store_true", help="print the results as Markdown tables and exit")
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.out)))
        return
    variants = grid(args.stage) if args.stage else {}
    variants.update({name: parse_name(name) for name in args.variants or ()})
    if not variants:
        raise SystemExit("give --stage or --variants")
    out = Path(args.out)
    cache: dict = {}
    for dataset in args.datasets:
        for name, payload in variants.items():
            for seed in args.seeds:
                state = load(out)
                entry = state.get("results", {}).get(dataset, {}).get(name, {"payload": payload, "runs": []})
                if any(r["seed"] == seed for r in entry["runs"]):
                    continue
                run = run_one(payload, dataset, seed, args.epochs, args.patience, cache)
                print(f"{dataset:12s} {name:48s} seed {seed}: val ndcg@10 {run['validation']['ndcg@10']:.4f} "
                      f"test recall@10 {run['test']['recall@10']:.4f} ndcg@10 {run['test']['ndcg@10']:.4f} "
                      f"({run['best_epoch']}/{run['epochs_run']} ep, {run['seconds_per_epoch']:.0f}s/ep)", flush=True)
                state = load(out)  # re-read: another invocation may have written meanwhile
                results = state.setdefault("results", {}).setdefault(dataset, {})
                entry = results.get(name, {"payload": payload, "runs": []})
                entry["runs"] = [r for r in entry["runs"] if r["seed"] != seed] + [run]
                entry["summary"] = summarise(entry["runs"])
                results[name] = entry
                state.update(benchmark="recipes: towers x losses x example modes x history x temperature x "
                                       "dropout x learning rate, selected on validation NDCG@10",
                             machine=machine(), references=REFERENCES, max_epochs=args.epochs,
                             patience=args.patience)
                write_result(str(out), state)


if __name__ == "__main__":
    main()
