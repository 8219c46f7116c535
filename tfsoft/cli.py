"""The ``tfsoft`` command line: thin argument parsing that calls the library.

Commands:
    tfsoft describe DATASET   statistics and split sizes of a dataset (name or file path)
    tfsoft train --config FILE.yaml --run-dir DIR [--set key=value ...] [--overwrite]
                              train, evaluate and write a run directory (:mod:`tfsoft.runs`)
    tfsoft evaluate --run-dir DIR [--split validation|test] [--checkpoint best|last]
                              re-evaluate a saved run; prints the metrics as JSON
    tfsoft recommend --run-dir DIR --user ID [--k 10] [--checkpoint best|last]
                              top-k items for one user, in process
    tfsoft export --run-dir DIR --export-dir EXPORT [--index scann|brute_force] [--k 100] [--version N]
                              write a TF Serving model version (:mod:`tfsoft.export`)
    tfsoft serve --export-dir EXPORT --model-name NAME [--port 8501] [--grpc-port 8500]
                              TF-Serving-compatible REST/gRPC server (:mod:`tfsoft.serving`)
    tfsoft retrieve --model EXPORT[/VERSION] --input USERS --output OUT [--k K] [--shard i/n]
                    [--runner local|beam [-- BEAM_OPTIONS]]
                              top-k of every user to Parquet parts (:mod:`tfsoft.batch`)

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
    from tfsoft.train_run import train_run
    from tfsoft.validation import SPLITS

    metrics = train_run(config, args.run_dir, overwrite=args.overwrite)
    print(f"run written to {args.run_dir} (best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, "
          f"{metrics['train_seconds']:.1f}s of training)")
    for split in SPLITS:
        shown = "  ".join(f"{name} {metrics[split][name]:.4f}" for name in ("recall@10", "ndcg@10", "mrr@10",
                                                                             "recall@20", "ndcg@20")
                          if name in metrics[split])
        print(f"  {split:<10} {shown}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tfsoft.loaded_run import evaluate_run

    splits = [args.split] if args.split else ["validation", "test"]
    print(json.dumps(evaluate_run(args.run_dir, splits=splits, checkpoint=args.checkpoint), indent=2))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from tfsoft.loaded_run import open_run

    run = open_run(args.run_dir, args.checkpoint if args.export_dir is None else None)
    user = int(args.user) if args.user.lstrip("-").isdigit() else args.user
    if args.export_dir is None:
        from tfsoft.recommend import recommend
        from tfsoft.runs import check_checkpoint

        check_checkpoint(run.paths, args.checkpoint)  # a damaged checkpoint is refused before TensorFlow loads
        answer = recommend(run, user, k=args.k, exclude_seen=not args.include_seen)
    else:  # the same user's history, answered by the exported SavedModel
        from tfsoft.recommend import user_history, verify_newest_export
        from tfsoft.serving.local import recommend_from_export

        if args.k < 1:
            from tfsoft.errors import RunError

            raise RunError(f"k must be >= 1; got {args.k}")
        verified = verify_newest_export(args.export_dir)  # a damaged version is named before it loads
        raw_user, _, history = user_history(run, user)
        items = run.prepared.items
        answer = {"user": raw_user, "history": items.ids(history[-run.max_history:]),
                  **recommend_from_export(args.export_dir, raw_user, items.ids(history), args.k,
                                          not args.include_seen)}
        if answer["export_version"] != verified:  # the newest did not load: an older version answered
            verify_newest_export(args.export_dir, answer["export_version"])
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    source = (f"exported version {answer['export_version']} in {args.export_dir}" if args.export_dir
              else f"run {args.run_dir}")
    print(f"user {answer['user']}: recent history {answer['history'][-5:]} (answered by {source})")
    for rank, (item, score) in enumerate(zip(answer["items"], answer["scores"]), start=1):
        print(f"  {rank:>3}. item {item}  score {score:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from tfsoft.runs import check_checkpoint, require_run

    # a directory that is not a run, or a missing or damaged checkpoint, is refused before TensorFlow loads
    check_checkpoint(require_run(args.run_dir), args.checkpoint)
    from tfsoft.export import export_run

    result = export_run(args.run_dir, args.export_dir, index=args.index, k=args.k, version=args.version,
                        checkpoint=args.checkpoint, min_recall=args.min_recall,
                        allow_low_recall=args.allow_low_recall)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"exported version {result.version} to {result.path} ({result.index} index, top-{result.k}, "
          f"inputs {', '.join(result.inputs)}, {result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f}s)")
    print(f"  recall@{result.k} against exact search on {result.recall_queries} real queries: {result.recall:.4f}")
    print(f"  signatures: {', '.join(result.signatures)}; {result.warmup_records} warmup requests")
    return 0


def _parse_labels(pairs) -> dict:
    from tfsoft.errors import ConfigError

    labels = {}
    for pair in pairs or ():
        name, _, version = pair.partition("=")
        if not name or not version.isdigit():
            raise ConfigError(f"--label must look like NAME=VERSION (e.g. stable=3); got {pair!r}")
        labels[name] = int(version)
    return labels


def _serve(args: argparse.Namespace) -> int:
    import logging

    from tfsoft.serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ModelServer(args.export_dir, args.model_name, host=args.host, rest_port=args.port,
                         grpc_port=args.grpc_port, poll_seconds=args.poll_seconds, num_versions=args.num_versions,
                         max_batch_size=args.max_batch_size, labels=_parse_labels(args.label),
                         max_body_bytes=args.max_body_bytes, max_history=args.max_history,
                         request_timeout=args.request_timeout_seconds, shutdown_grace=args.shutdown_grace_seconds)
    server.serve_forever()
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    import logging

    from tfsoft.batch.job import RetrieveOptions
    from tfsoft.batch.sharding import ShardSpec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam logs every bundle at INFO
    options = RetrieveOptions(
        model=args.model, input=args.input, output=args.output, k=args.k, exclude_seen=args.exclude_seen,
        batch_size=args.batch_size, part_size=args.part_size, shard=ShardSpec.parse(args.shard),
        signature=args.signature, unknown_users=args.unknown_users, user_column=args.user_column,
        history_column=args.history_column, overwrite=args.overwrite,
        progress=False if args.no_progress else None, model_threads=args.model_threads)
    pipeline_options = [option for option in (args.pipeline_options or []) if option != "--"]
    if args.runner == "beam":
        from tfsoft.batch.beam import run_beam

        summary = run_beam(options, pipeline_options, large_model=args.beam_model_copies is not None,
                           model_copies=args.beam_model_copies)
    else:
        if pipeline_options:
            from tfsoft.errors import ConfigError

            raise ConfigError(f"options after '--' are Beam pipeline options, for --runner beam; got "
                              f"{' '.join(pipeline_options)}")
        from tfsoft.batch.job import run_retrieval

        summary = run_retrieval(options)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    counts = summary.counts
    state = ("already complete: nothing to do" if summary.noop else
             f"{summary.parts_written} parts written, {summary.parts_skipped} already committed")
    print(f"retrieve shard {summary.shard} -> {summary.output}: {state}; {counts['users_read']:,} users read, "
          f"{counts['users_written']:,} written, {counts['users_unknown']:,} unknown, {counts['rows_rejected']:,} "
          f"rejected" + ("" if summary.complete else " (other shards still to finish before _SUCCESS)"))
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
                                                "catalog for the user's recent history and print the top k; "
                                                "with --export-dir, through the exported SavedModel.")
    recommend.add_argument("--run-dir", required=True, help="a directory written by tfsoft train")
    recommend.add_argument("--user", required=True, help="raw user id, as in the data")
    recommend.add_argument("--k", type=int, default=10)
    recommend.add_argument("--include-seen", action="store_true", help="do not skip items the user already has")
    recommend.add_argument("--checkpoint", choices=["best", "last"], default="best",
                           help="which weights to load (default: best; not used with --export-dir)")
    recommend.add_argument("--json", action="store_true", help="print JSON")
    recommend.add_argument("--export-dir", default=None,
                           help="answer with the newest version exported there (the SavedModel TF Serving runs) "
                                "instead of the run's checkpoint")
    recommend.set_defaults(handler=_recommend)

    export = commands.add_parser("export", help="export a run as a TF Serving model version",
                                 description="Write EXPORT/<version>/ (SavedModel with serving_default, "
                                             "top_k_excluding, query_embedding and candidate_embedding "
                                             "signatures, id vocabularies in assets/, warmup requests in "
                                             "assets.extra/). The version is staged and renamed into place, "
                                             "so a polling server never sees half an export.")
    export.add_argument("--run-dir", required=True, help="a directory written by tfsoft train")
    export.add_argument("--export-dir", required=True, help="the model base path TF Serving watches")
    export.add_argument("--index", choices=["brute_force", "scann"], default=None,
                        help="brute_force: exact, stock TF ops; scann: approximate, needs a ScaNN-linked server "
                             "(default: the run config's export.index)")
    export.add_argument("--k", type=int, default=None, help="items per query (default: export.k, 100)")
    export.add_argument("--version", type=int, default=None, help="integer version (default: newest + 1)")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.add_argument("--min-recall", type=float, default=None,
                        help="refuse a ScaNN index below this recall@k on real queries (default 0.95)")
    export.add_argument("--allow-low-recall", action="store_true",
                        help="export an index below --min-recall anyway, with a warning")
    export.add_argument("--json", action="store_true", help="print the export report as JSON")
    export.set_defaults(handler=_export)

    serve = commands.add_parser("serve", help="serve an export directory over TF Serving's REST and gRPC APIs",
                                description="A local, TF-Serving-compatible server: same URLs, JSON and "
                                            "protos; loads the newest version, replays its warmup requests and "
                                            "picks up new versions while running.")
    serve.add_argument("--export-dir", required=True, help="the model base path written by tfsoft export")
    serve.add_argument("--model-name", required=True, help="the name in /v1/models/<name>")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8501, help="REST port")
    serve.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default: no gRPC)")
    serve.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for new versions")
    serve.add_argument("--num-versions", type=int, default=1, help="newest versions kept loaded")
    serve.add_argument("--max-batch-size", type=int, default=1024, help="largest batch a request may carry")
    serve.add_argument("--label", action="append", metavar="NAME=VERSION", help="version label (repeatable)")
    # limits (defaults and TF Serving's behaviour: tfsoft.serving.limits; 0 = no limit)
    serve.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                       help="largest REST request body, answered 413 past it (default 16 MiB; 0 = no limit)")
    serve.add_argument("--max-history", type=int, default=10_000,
                       help="longest id list per instance (history, exclude_item_ids), answered 400 / "
                            "INVALID_ARGUMENT past it (default 10000; 0 = no limit)")
    serve.add_argument("--request-timeout-seconds", type=float, default=30.0,
                       help="time a request may take, answered 504 / DEADLINE_EXCEEDED past it (default 30, "
                            "TF Serving's --rest_api_timeout_in_ms; 0 = no limit)")
    serve.add_argument("--shutdown-grace-seconds", type=float, default=25.0,
                       help="on SIGTERM/SIGINT: time the requests in flight get to finish before the server exits "
                            "(default 25)")
    serve.set_defaults(handler=_serve)

    retrieve = commands.add_parser(
        "retrieve", help="top-k items for every user of a file, written to Parquet (batch retrieval)",
        description="Read users (Parquet or CSV: a file, a directory or a glob) in batches, answer each with the "
                    "exported SavedModel's own signature, and write Parquet part files (user_id, item_ids, "
                    "scores, model, model_version, source) committed one by one, rejected rows under "
                    "_rejects/, and a _SUCCESS manifest. A restarted job skips committed parts; a finished "
                    "output is left alone. Beam: --runner beam -- --runner=DataflowRunner ...")
    retrieve.add_argument("--model", required=True, help="export base path (newest version) or a version directory")
    retrieve.add_argument("--input", required=True, help="users: a Parquet/CSV file, a directory of them or a glob")
    retrieve.add_argument("--output", required=True, help="output directory (part files, _rejects/, _SUCCESS)")
    retrieve.add_argument("--k", type=int, default=None,
                          help="items per user (at most the export's k, which is the default)")
    retrieve.add_argument("--exclude-seen", action="store_true",
                          help="leave out the items of each user's history (signature top_k_excluding)")
    retrieve.add_argument("--batch-size", type=int, default=1024, help="users per model call (default 1024)")
    retrieve.add_argument("--part-size", type=int, default=100_000,
                          help="users per committed part file: the unit of restart (default 100000)")
    retrieve.add_argument("--shard", default=None, metavar="I/N",
                          help="keep the users whose stable hash of the id is I mod N (I from 0); e.g. "
                               "--shard $JOB_COMPLETION_INDEX/8")
    retrieve.add_argument("--signature", default=None,
                          help="signature to call (default serving_default, or top_k_excluding with --exclude-seen)")
    retrieve.add_argument("--unknown-users", choices=["popular", "skip"], default="popular",
                          help="users the model knows nothing about: the most popular items (scores null, source "
                               "popular) or no row; counted in _SUCCESS either way (default popular)")
    retrieve.add_argument("--user-column", default="user_id", help="user id column (default user_id)")
    retrieve.add_argument("--history-column", default="history",
                          help="history column: a list of item ids, or text such as '12 7 99' (default history)")
    retrieve.add_argument("--overwrite", action="store_true", help="redo this shard even if its output is finished")
    retrieve.add_argument("--runner", choices=["local", "beam"], default="local",
                          help="local: this process; beam: an Apache Beam pipeline (options after --)")
    retrieve.add_argument("--model-threads", type=int, default=None, metavar="N",
                          help="model calls running at once (default: the CPU count, at most 4; an exported ScaNN "
                               "index searches one batch on one core)")
    retrieve.add_argument("--beam-model-copies", type=int, default=None, metavar="N",
                          help="Beam: load N copies of the model per worker, shared by its processes (large "
                               "indexes); default one copy per process")
    retrieve.add_argument("--no-progress", action="store_true", help="one log line per part, even on a terminal")
    retrieve.add_argument("--json", action="store_true", help="print the summary as JSON")
    retrieve.add_argument("pipeline_options", nargs=argparse.REMAINDER,
                          help="after --: Beam pipeline options (--runner=DirectRunner, --runner=DataflowRunner ...)")
    retrieve.set_defaults(handler=_retrieve)
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
