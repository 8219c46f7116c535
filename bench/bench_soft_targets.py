"""Soft targets against their base, per backbone (issue 13): SoftRec's label smoothing, POP+ and
the neighbour source (CSN), distillation from a teacher run (SKD: a base run of the same tower; CKD: of the other tower; ``ens``: both,
their probabilities averaged as CSRec averages its teachers),
on full softmax and on in-batch SSM, beside the CSRec paper's Base and SoftRec columns.

Every run is ``tfsoft train`` (:func:`tfsoft.train_run.train_run`) into
``runs/bench_soft_targets/<dataset>/<tower>/<variant>/seed<k>``, so base runs serve as the
teachers of later variants; the JSON is written after every run and a rerun skips what it holds.
Selection is on validation NDCG@10; test is recorded.

Two recipes: the ``configs/towers/`` recipes tuned on lastfm_small (every variant without a prefix),
and, with the ``default_`` variants, tfsoft's defaults (only the data and the tower named: in-batch
softmax with mixed negatives and logQ, the tower's own recipe), the strong base on ML-1M
(README, "MovieLens 1M"); a ``default_`` variant's teachers are ``default_base`` runs.

    .venv/bin/python bench/bench_soft_targets.py --dataset lastfm_small --seeds 0 1 2
    .venv/bin/python bench/bench_soft_targets.py --dataset lastfm_small --variants base popularity --epochs 1 --steps 3
    .venv/bin/python bench/bench_soft_targets.py --variants ckd/a0.7/t6 ckd/a0.3/t1 --seeds 0   # the α/T grid
    .venv/bin/python bench/bench_soft_targets.py --dataset ml-1m --towers sasrec --variants default_base default_ckd/a0.8/t1 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine, mean_std, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOWERS = {"gru": "configs/towers/gru4rec_ssm.yaml", "sasrec": "configs/towers/sasrec_ssm.yaml"}
DATA = {"lastfm_small": [],
        "ml-1m": ["data.path=ml-1m", "data.window=null", "data.split=leave_one_out", "data.max_history=50",
                  "data.example_mode=window"]}
#: the data of the ``default_`` variants: as bench/bench_recipes.py's ``defaults/<tower>`` rows
DEFAULT_DATA = {"lastfm_small": ["data.path=lastfm_small", "data.split=leave_one_out", "data.window=20"],
                "ml-1m": ["data.path=ml-1m", "data.split=leave_one_out"]}
OUT_NAMES = {"lastfm_small": "lastfm", "ml-1m": "ml1m"}
FULL = ["loss=full_softmax", "loss.temperature=0.1"]
SSM = ["loss=in_batch", "loss.temperature=0.1", "loss.mixed_negatives=1024", "loss.log_q_correction=true"]

#: soft-target overrides per source; "{teacher}" / "{other}" are run dirs
SOFT = {
    "label_smoothing": ["soft_target=label_smoothing", "soft_target.alpha=0.1"],
    "popularity": ["soft_target=popularity", "soft_target.alpha=0.5", "soft_target.temperature=3"],
    "skd": ["soft_target=teacher", "soft_target.teacher_runs=[{teacher}]", "soft_target.alpha=0.5",
            "soft_target.temperature=3"],
    "ckd": ["soft_target=teacher", "soft_target.teacher_runs=[{other}]", "soft_target.alpha=0.5",
            "soft_target.temperature=3"],
    # CSRec's averaged teachers: both backbones' base runs, probabilities averaged with equal weights
    "ens": ["soft_target=teacher", "soft_target.teacher_runs=[{teacher},{other}]", "soft_target.alpha=0.5",
            "soft_target.temperature=3"],
    "neighbour": ["soft_target=neighbour", "soft_target.alpha=0.5", "soft_target.temperature=3",
                  "soft_target.num_neighbours=10"],
    "desorec": ["soft_target=desorec", "soft_target.teacher_runs=[{teacher}]"],
}
#: a variant name's recipe prefix -> (its base loss overrides, the sources run on it): full softmax
#: on the configs/towers/ recipe (no prefix), in-batch SSM on it (``ssm_``), and tfsoft's defaults
#: untouched (``default_``: the library's loss and tower recipe, only the data and tower named)
RECIPES = {"": (FULL, tuple(SOFT)), "ssm_": (SSM, ("popularity", "skd", "ckd", "ens", "neighbour")),
           "default_": ([], ("skd", "ckd", "ens"))}
#: variant -> (base loss overrides, soft-target overrides)
VARIANTS = {f"{prefix}{name}": (loss, SOFT.get(name, []))
            for prefix, (loss, sources) in RECIPES.items() for name in ("base", *sources)}
#: what a run with no --variants trains (the default_ recipe is asked for by name)
DEFAULT_VARIANTS = [name for name in VARIANTS if not name.startswith("default_")]

#: the best variant per backbone on lastfm_small, chosen on validation NDCG@10 (seed-0 screen,
#: bench/results/soft_targets_screen_*.json): configs/soft_targets/{gru4rec,sasrec}_best.yaml
BEST = {"gru": "ckd/a0.8/t1", "sasrec": "ckd/a0.8/t1"}

#: CSRec (TOIS) Table: lastfm_small, Recall@10 / NDCG@10 (%)
PAPER = {"lastfm_small": {"gru": {"base": (16.683, 10.081)}, "sasrec": {"base": (20.350, 11.432),
                                                                       "best_distillation": (21.131, 12.472)}}}


def parse_variant(name: str) -> tuple[list[str], list[str]]:
    """A variant name -> (base loss overrides, soft-target overrides). ``NAME`` is a key of
    :data:`VARIANTS`; ``NAME/aALPHA/tT`` (either part optional) sets ``soft_target.alpha`` and
    ``soft_target.temperature`` on it: the papers' grids (SoftRec α 0.1–1, T 1–10; CSRec T ∈ {1, 3, 6, 9})."""
    key, *parts = name.split("/")
    if key not in VARIANTS:
        raise SystemExit(f"unknown variant {name!r}: the base of a name is one of {', '.join(VARIANTS)}")
    loss, soft = VARIANTS[key]
    if parts and not soft:
        raise SystemExit(f"variant {name!r}: {key!r} has no soft target to set alpha/temperature on")
    settings = {}
    for part in parts:
        field = {"a": "alpha", "t": "temperature"}.get(part[:1])
        try:
            value = float(part[1:])
        except ValueError:
            field = None
        if field is None:
            raise SystemExit(f"variant {name!r}: part {part!r} is neither aALPHA nor tTEMPERATURE")
        settings[field] = value
    soft = [s for s in soft if s.split("=")[0].removeprefix("soft_target.") not in settings]
    soft += [f"soft_target.{field}={value:g}" for field, value in settings.items()]
    return loss, soft


def teacher_variant(name: str) -> str:
    """The base run a variant's teachers come from."""
    return f"{recipe_prefix(name)}base"


def recipe_prefix(name: str) -> str:
    """The recipe prefix of a variant name (a key of :data:`RECIPES`)."""
    return next((prefix for prefix in RECIPES if prefix and name.startswith(prefix)), "")


def run_dir(out_root: Path, dataset: str, tower: str, variant: str, seed: int) -> Path:
    return out_root / dataset / tower / variant / f"seed{seed}"


def teacher_runs(dataset: str, tower: str, variant: str, seed: int, out_root: Path) -> dict[str, tuple[str, Path]]:
    """``{teacher}`` / ``{other}`` of a variant -> (tower, run dir) of that base run: the same
    tower's and the other backbone's base run of the variant's recipe, same seed."""
    other = "sasrec" if tower == "gru" else "gru"
    base = teacher_variant(variant)
    return {"teacher": (tower, run_dir(out_root, dataset, tower, base, seed)),
            "other": (other, run_dir(out_root, dataset, other, base, seed))}


def variant_overrides(dataset: str, tower: str, variant: str, seed: int, epochs: int, steps: int | None,
                      out_root: Path) -> list[str]:
    """The ``--set`` overrides of one run (on the tower's config file, or on the defaults for a
    ``default_`` variant; see :func:`variant_config`)."""
    loss, soft = parse_variant(variant)
    runs = {key: path for key, (_, path) in teacher_runs(dataset, tower, variant, seed, out_root).items()}
    data = [*DEFAULT_DATA[dataset], f"model.query_tower={tower}"] if recipe_prefix(variant) == "default_" \
        else DATA[dataset]
    overrides = [*data, *loss, *(s.format(**runs) for s in soft), f"train.epochs={epochs}", f"train.seed={seed}"]
    return overrides + ([f"train.steps_per_epoch={steps}"] if steps else [])


def variant_config(overrides: list[str], tower: str, variant: str):
    """The validated config of one run: ``configs/towers/`` for the lastfm_small recipes, tfsoft's
    defaults (an empty config) for the ``default_`` variants."""
    from tfsoft.config import apply_overrides, load_config, parse_config

    if recipe_prefix(variant) == "default_":
        return parse_config(apply_overrides({}, overrides), f"defaults with --set {' '.join(overrides)}")
    return load_config(ROOT / TOWERS[tower], overrides)


def teacher_needs(dataset: str, tower: str, variant: str, seed: int, out_root: Path) -> list[tuple[str, Path]]:
    """(tower, run dir) of each base run ``variant`` reads as a teacher."""
    joined = " ".join(parse_variant(variant)[1])
    return [run for key, run in teacher_runs(dataset, tower, variant, seed, out_root).items()
            if "{" + key + "}" in joined]


def train_variant(dataset, tower, variant, seed, epochs, steps, out_root) -> dict:
    from tfsoft.train_run import train_run

    for teacher_tower, needed in teacher_needs(dataset, tower, variant, seed, out_root):
        if not (needed / "metrics.json").is_file():
            # the JSON may hold the base run while its directory is gone (another checkout): the same
            # config and seed train it again as the teacher; its metrics are not recorded twice
            base = teacher_variant(variant)
            print(f"training the teacher {needed} ({teacher_tower} {base}, seed {seed}) for {variant}", flush=True)
            train_variant(dataset, teacher_tower, base, seed, epochs, steps, out_root)
    overrides = variant_overrides(dataset, tower, variant, seed, epochs, steps, out_root)
    config = variant_config(overrides, tower, variant)
    target = run_dir(out_root, dataset, tower, variant, seed)
    metrics = train_run(config, target, overwrite=True)
    keep = lambda split: {k: v for k, v in metrics[split].items() if "@" in k and k != "long_tail_recall"}  # noqa: E731
    return {"seed": seed, "run_dir": str(target), "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "validation": keep("validation"), "test": keep("test"),
            "overrides": overrides}


def summarise(entry: dict) -> dict:
    """Mean ± std of validation/test Recall@10 and NDCG@10 over an entry's runs."""
    return {f"{split}_{metric}": mean_std(r[split][metric] for r in entry["runs"])
            for split in ("validation", "test") for metric in ("recall@10", "ndcg@10")}


def merge_results(state: dict, other: dict) -> int:
    """Fold ``other``'s runs into ``state`` (runs of a (tower, variant, seed) already held are kept);
    returns the runs added. Two processes on two cores (one tower each) write two files; this joins them."""
    added = 0
    for tower, variants in other.get("results", {}).items():
        for variant, entry in variants.items():
            mine = state.setdefault("results", {}).setdefault(tower, {}).setdefault(variant, {"runs": []})
            held = {r["seed"] for r in mine["runs"]}
            for run in entry["runs"]:
                if run["seed"] not in held:
                    mine["runs"].append(run)
                    added += 1
            mine["runs"].sort(key=lambda r: r["seed"])
            mine["summary"] = summarise(mine)
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="lastfm_small", choices=list(DATA))
    parser.add_argument("--towers", nargs="+", default=list(TOWERS), choices=list(TOWERS))
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help=f"{', '.join(VARIANTS)}; NAME/aALPHA/tT sets α and T (e.g. ckd/a0.7/t6)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (smoke runs only)")
    parser.add_argument("--runs", default="runs/bench_soft_targets")
    parser.add_argument("--out", default=None, help="default: bench/results/soft_targets_{lastfm,ml1m}.json")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only fold these results files (e.g. one per tower, run side by side) into --out")
    args = parser.parse_args()
    out = Path(args.out or f"bench/results/soft_targets_{OUT_NAMES[args.dataset]}.json")
    state = json.loads(out.read_text()) if out.is_file() else {}
    if args.merge:
        for path in args.merge:
            other = json.loads(Path(path).read_text())
            print(f"{path}: {merge_results(state, other)} runs added")
            for key in ("benchmark", "dataset", "machine", "paper", "epochs", "steps_per_epoch"):
                state.setdefault(key, other.get(key))
        write_result(str(out), state)
        return
    # base runs first: the distillation variants read them as teachers
    for name in args.variants:
        parse_variant(name)  # unknown names fail before any training
    order = sorted(args.variants, key=lambda name: bool(parse_variant(name)[1]))
    for variant in order:
        for tower in args.towers:
            for seed in args.seeds:
                entry = state.setdefault("results", {}).setdefault(tower, {}).setdefault(variant, {"runs": []})
                if any(r["seed"] == seed for r in entry["runs"]):
                    continue
                run = train_variant(args.dataset, tower, variant, seed, args.epochs, args.steps, Path(args.runs))
                print(f"{tower:7s} {variant:16s} seed {seed}: val ndcg@10 {run['validation']['ndcg@10']:.4f} "
                      f"test recall@10 {run['test']['recall@10']:.4f} ndcg@10 {run['test']['ndcg@10']:.4f}",
                      flush=True)
                entry["runs"].append(run)
                entry["summary"] = summarise(entry)
                state.update(benchmark="soft targets vs base per backbone (issue 13)", dataset=args.dataset,
                             machine=machine(), paper=PAPER.get(args.dataset, {}), epochs=args.epochs,
                             steps_per_epoch=args.steps)
                write_result(str(out), state)


if __name__ == "__main__":
    main()
