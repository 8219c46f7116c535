"""The ``tfsoft`` command line: thin argument parsing that calls the library.

Commands:
    tfsoft describe DATASET   statistics and split sizes of a dataset (name or file path)
    tfsoft train --config FILE.yaml --run-dir DIR [--set key=value ...] [--overwrite]
                              train, evaluate and write a run directory (:mod:`tfsoft.runs`)
    tfsoft evaluate --run-dir DIR [--split validation|test] [--checkpoint best|last]
                              re-evaluate a saved run; prints the metrics as JSON

Errors in the input (config, data, run directory) print ``tfsoft: error: ...`` and exit 2;
Ctrl-C during training prints which checkpoints are usable and exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from tfsoft.errors import TfsoftError, TrainingInterrupted


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="registered dataset name (e.g. lastfm_small) or a CSV/Parquet path")
    parser.add_argument("--user-column", default="user_id", help="user id column (files only)")
    parser.add_argument("--item-column", default="item_id", help="item id column (files only)")
    parser.add_argument("--time-column", default=None, help="timestamp column (files only)")
    parser.add_argument("--weight-column", default=None, help="rating/weight column (files only)")
    parser.add_argument("--delimiter", default=None, help="field separator of a text file (guessed by default)")
    parser.add_argument("--split", default=None, choices=["leave_one_out", "ratio", "temporal"],
                        help="split protocol (default: the dataset's published protocol, else leave_one_out)")
    parser.add_argument("--window", type=int, default=None, help="leave-one-out over windows of this length")
    parser.add_argument("--ratios", default="0.8,0.1,0.1", help="train,validation,test ratios for --split ratio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-user-interactions", type=int, default=0)
    parser.add_argument("--min-item-interactions", type=int, default=0)


def _load(args: argparse.Namespace):
    from tfsoft.data import ColumnSpec, DATASETS, SplitSpec, load_interactions, prepare

    columns = ColumnSpec(user=args.user_column, item=args.item_column, time=args.time_column,
                         weight=args.weight_column)
    frame = load_interactions(args.dataset, columns, delimiter=args.delimiter)
    protocol = DATASETS[args.dataset].protocol if args.dataset in DATASETS else {}
    ratios = tuple(float(part) for part in args.ratios.split(","))
    spec = SplitSpec(
        protocol=args.split or protocol.get("split", "leave_one_out"),
        window=args.window if args.window is not None else (protocol.get("window") if not args.split else None),
        ratios=ratios if args.split else tuple(protocol.get("ratios", ratios)),
        seed=args.seed,
    )
    return prepare(frame, spec, min_user_interactions=args.min_user_interactions,
                   min_item_interactions=args.min_item_interactions), spec


def _describe(args: argparse.Namespace) -> int:
    prepared, spec = _load(args)
    stats = prepared.statistics()
    stats["dataset"] = args.dataset
    stats["split_spec"] = {"protocol": spec.protocol, "window": spec.window, "ratios": list(spec.ratios), "seed": spec.seed}
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    split = stats["split"]
    print(f"dataset      {args.dataset}")
    print(f"interactions {stats['interactions']:,}   users {stats['users']:,}   items {stats['items']:,}   "
          f"density {stats['density']:.4%}")
    per_user = stats["interactions_per_user"]
    print(f"per user     min {per_user['min']}   median {per_user['median']:g}   max {per_user['max']}")
    window = f", window {spec.window}" if spec.window else ""
    print(f"split        {split['protocol']}{window}")
    print(f"  train      {split['train_sequences']:,} sequences, {split['train_interactions']:,} interactions")
    print(f"  validation {split['validation_queries']:,} queries, {split['validation_targets']:,} targets")
    print(f"  test       {split['test_queries']:,} queries, {split['test_targets']:,} targets")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tfsoft.config import load_config

    config = load_config(args.config, args.overrides or ())  # validated before TensorFlow loads
    from tfsoft import runs

    metrics = runs.train_run(config, args.run_dir, overwrite=args.overwrite)
    print(f"run written to {args.run_dir} (best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
          f"{metrics['train_seconds']:.1f}s of training)")
    for split in runs.SPLITS:
        shown = "  ".join(f"{name} {metrics[split][name]:.4f}" for name in ("recall@10", "ndcg@10", "mrr@10",
                                                                             "recall@20", "ndcg@20")
                          if name in metrics[split])
        print(f"  {split:<10} {shown}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tfsoft import runs

    splits = [args.split] if args.split else list(runs.SPLITS)
    print(json.dumps(runs.evaluate_run(args.run_dir, splits=splits, checkpoint=args.checkpoint), indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from tfsoft import runs

    user = int(args.user) if args.user.lstrip("-").isdigit() else args.user
    answer = runs.recommend(args.run_dir, user, k=args.k, exclude_seen=not args.include_seen)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    print(f"user {answer['user']}: recent history {answer['history'][-5:]}")
    for rank, (item, score) in enumerate(zip(answer["items"], answer["scores"]), start=1):
        print(f"  {rank:>3}. item {item}  score {score:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfsoft", description="Train, evaluate and serve two-tower retrieval models.")
    commands = parser.add_subparsers(dest="command", required=True)
    describe = commands.add_parser("describe", help="print dataset statistics and split sizes")
    _add_data_arguments(describe)
    describe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    describe.set_defaults(handler=_describe)

    train = commands.add_parser("train", help="train a config into a run directory, then evaluate it",
                                description="Train with fit, evaluate the best epoch on validation and test with "
                                            "full ranking, and write config, vocabularies, checkpoints, "
                                            "TensorBoard logs, history.csv, metrics.json and plots into --run-dir.")
    train.add_argument("--config", required=True, help="YAML config (see configs/)")
    train.add_argument("--run-dir", required=True, help="directory to write; must be empty or absent")
    train.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.epochs=3 (repeatable; YAML value parsing)")
    train.add_argument("--overwrite", action="store_true", help="replace the run files of an existing --run-dir")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="re-evaluate a saved run and print its metrics as JSON",
                                   description="Rebuild data and model from the run's config.yaml, load a "
                                               "checkpoint and print full-ranking metrics as JSON (the best "
                                               "checkpoint reproduces metrics.json).")
    evaluate.add_argument("--run-dir", required=True, help="a directory written by tfsoft train")
    evaluate.add_argument("--split", choices=["validation", "test"], default=None, help="default: both")
    evaluate.add_argument("--checkpoint", choices=["best", "last"], default="best",
                          help="which weights to load (default: best)")
    evaluate.set_defaults(handler=_evaluate)

    recommend = commands.add_parser("recommend", help="top-k items for one user of a saved run",
                                    description="Answer a retrieval query with a trained run: score the whole "
                                                "catalog for the user's recent history and print the top k.")
    recommend.add_argument("--run-dir", required=True, help="a directory written by tfsoft train")
    recommend.add_argument("--user", required=True, help="raw user id, as in the data")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--include-seen", action="store_true", help="do not skip items the user already has")
    recommend.add_argument("--json", action="store_true", help="print JSON")
    recommend.set_defaults(handler=_recommend)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TrainingInterrupted as error:
        print(f"tfsoft: interrupted: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tfsoft: interrupted", file=sys.stderr)
        return 130
    except TfsoftError as error:
        print(f"tfsoft: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
