"""``tfsoft train``: train a config into a run directory (:mod:`tfsoft.runs` has the layout).

Checks the data source and claims the directory before any work, seeds everything and
(``train.deterministic``) turns on deterministic ops, writes config and vocabularies, trains
with :func:`tfsoft.training.train` and the run's callbacks (checkpoints with their checksum
manifest, history, TensorBoard, progress), evaluates the best checkpoint once per split with
:func:`tfsoft.validation.evaluate_splits`, draws the plots and writes ``metrics.json`` last.

Under ``distribute.strategy: multi_worker`` only the chief writes the run directory; every
other worker trains (collectives need all of them) and writes its copies of the run files
into a private scratch directory that is removed afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tfsoft.config import Config, config_to_yaml, monitor_mode
from tfsoft.errors import RunError, TrainingInterrupted
from tfsoft.files import atomic_write_json, atomic_write_text
from tfsoft.runs import CHECKPOINTS, RunPaths, check_data_source, claim_run_dir, resolve_paths


def train_run(config: Config, run_dir: str | Path, *, overwrite: bool = False, callbacks=(), stream=None) -> dict:
    """Train ``config`` into a run directory and return what it wrote to ``metrics.json``.

    Args:
        config: validated configuration.
        run_dir: directory to write (must be empty or absent unless ``overwrite``).
        overwrite: replace the run files of an existing run directory.
        callbacks: extra Keras callbacks for ``fit`` (run after the run's own).
        stream: where progress lines go (standard error by default).

    Raises:
        TrainingInterrupted: on KeyboardInterrupt (Ctrl-C); the checkpoints of the completed
            epochs stay usable and the message names them.
    """
    stream = stream or sys.stderr
    check_data_source(config)
    config = resolve_paths(config)
    from tfsoft import distribute

    # The strategy first: splitting the CPU into logical devices must precede any TF work.
    strategy = distribute.make_strategy(config.distribute.strategy, config.distribute.cpu_replicas)
    chief = distribute.is_chief(strategy)
    if chief:
        return _train_into(config, claim_run_dir(run_dir, overwrite=overwrite), strategy, callbacks, stream)
    with distribute.write_dir(run_dir, strategy) as scratch:  # a private directory, removed afterwards
        return _train_into(config, RunPaths(Path(scratch)), strategy, callbacks, stream)


def _train_into(config: Config, paths: RunPaths, strategy, callbacks, stream) -> dict:
    from tfsoft.backend import keras
    from tfsoft.callbacks import AtomicModelCheckpoint, HistoryCSV, ProgressLine, save_weights_atomically
    from tfsoft.determinism import make_deterministic
    from tfsoft.plots import plot_long_tail, plot_training
    from tfsoft.loaded_run import load_run_model
    from tfsoft.training import prepare_data, train
    from tfsoft.validation import evaluate_splits

    make_deterministic(config.train.seed, ops=config.train.deterministic)
    prepared = prepare_data(config.data)
    atomic_write_text(paths.config, config_to_yaml(config))
    prepared.save_vocabularies(paths.root)
    teachers = config.soft_target.teacher_runs_used() if config.soft_target is not None else []
    if teachers:  # which teacher runs (and which bytes of them) this student learnt from
        from tfsoft.teachers.teacher import teacher_record

        checkpoint = getattr(config.soft_target, "checkpoint", "best")
        atomic_write_json(paths.root / "teachers.json",
                          {"teachers": [teacher_record(run, checkpoint) for run in teachers]})

    monitor, mode = config.train.monitor, monitor_mode(config.train.monitor)
    # each checkpoint write also records its sha256 in checkpoints/manifest.json (tfsoft.runs)
    best = AtomicModelCheckpoint(paths.checkpoint("best"), monitor=monitor, mode=mode, save_best_only=True,
                                 manifest=True)
    last = AtomicModelCheckpoint(paths.checkpoint("last"), manifest=True)
    history = HistoryCSV(paths.history)
    progress = ProgressLine(config.train.epochs, monitor=monitor, stream=stream)
    board = keras.callbacks.TensorBoard(log_dir=str(paths.logs), write_graph=False, profile_batch=0)
    try:
        result = train(config, prepared=prepared, callbacks=[best, last, history, board, progress, *callbacks],
                       deterministic=config.train.deterministic, strategy=strategy)
        if not config.model.query_tower.trainable:  # a baseline: its (weightless) model is both checkpoints
            for which in CHECKPOINTS:
                save_weights_atomically(result.model, paths.checkpoint(which), manifest=True)
            atomic_write_text(paths.history, "epoch,seconds\n")
            best.saved_epoch = 0
        if best.saved_epoch is None:
            raise RunError(f"no epoch reported {monitor}, so no best checkpoint was written to "
                           f"'{paths.checkpoint('best')}'")
        # the chosen checkpoint, exactly as `tfsoft evaluate` will load it: a model rebuilt outside
        # the strategy (loading an HDF5 file into the strategy's sync-on-read variables fails)
        metrics = evaluate_splits(load_run_model(config, prepared, paths.checkpoint("best")), config, prepared)
    except KeyboardInterrupt:
        progress.close()
        raise TrainingInterrupted(_interrupted_message(paths, config, best, last, history)) from None
    metrics.update(best_epoch=best.saved_epoch, epochs_run=history.epochs_done, monitor=monitor,
                   train_seconds=result.train_seconds, train_examples=result.examples)
    plot_training(result.history, paths.training_plot, ks=config.evaluation.ks, best_epoch=best.saved_epoch or None)
    plot_long_tail(metrics["test"].get("long_tail_recall", {}), paths.long_tail_plot, split="test")
    atomic_write_json(paths.metrics, metrics)
    return metrics


def _interrupted_message(paths: RunPaths, config: Config, best, last, history) -> str:
    epochs = config.train.epochs
    if history.finished:
        where = f"after training ({history.epochs_done} epochs), during the final evaluation"
    else:
        where = f"in epoch {history.epochs_done + 1} of {epochs}"
    if last.saved_epoch is None:
        return (f"training interrupted {where}, before any epoch finished: no checkpoint was written. "
                f"'{paths.root}' holds the config and vocabularies only; train again with --overwrite.")
    lines = [
        f"training interrupted {where}; the checkpoints of the completed epochs are usable:",
        f"  last epoch {last.saved_epoch}: {paths.checkpoint('last')}",
        f"  best epoch {best.saved_epoch} ({best.monitor} {best.saved_value:.4f}): {paths.checkpoint('best')}",
        f"  per-epoch logs: {paths.history}; metrics.json and the plots were not written.",
        f"Evaluate with: tfsoft evaluate --run-dir {paths.root} [--checkpoint last]",
    ]
    return "\n".join(lines)
