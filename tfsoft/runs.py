"""Run directories: what ``tfsoft train`` writes and ``tfsoft evaluate`` reads back.

A run directory holds everything needed to rebuild, inspect and re-evaluate one training run::

    DIR/
      config.yaml              the resolved config (every default filled in, --set applied)
      user_vocabulary.json     raw user id <-> index (index 0 = OOV/padding)
      item_vocabulary.json     raw item id <-> index
      checkpoints/
        best.weights.h5        weights of the best epoch by train.monitor (validation)
        last.weights.h5        weights of the last completed epoch
      logs/                    TensorBoard event files (train/ and validation/)
      history.csv              one row per epoch: loss, val_recall@K, val_ndcg@K, ..., seconds
      metrics.json             {"validation": {...}, "test": {...}, "best_epoch", "train_seconds", ...}
      plots/training.png       loss and validation Recall/NDCG per epoch
      plots/long_tail.png      test Recall@K contribution of each item popularity group

Every file is written atomically (temporary file + rename, :mod:`tfsoft.files`), and
``metrics.json`` is written last: a run directory with ``metrics.json`` is complete. The model
is rebuilt from ``config.yaml`` and the data (checked against the saved vocabularies) and the
checkpoint's weights are loaded into it (:func:`load_run_model`), so ``metrics.json`` is
computed exactly as :func:`evaluate_run` recomputes it.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tfsoft.backend import keras
from tfsoft.callbacks import AtomicModelCheckpoint, HistoryCSV, ProgressLine, without_get_config_warning
from tfsoft.config import Config, config_to_yaml, load_config
from tfsoft.data import DATASETS, PreparedData, Ragged, Vocabulary, query_features
from tfsoft.determinism import make_deterministic
from tfsoft.errors import ConfigError, RunError, TrainingInterrupted
from tfsoft.evaluation import EvaluationResult
from tfsoft.files import atomic_write_json, atomic_write_text
from tfsoft.training import build_model, exclude_seen, prepare_data, train
from tfsoft.validation import evaluate_model

SPLITS = ("validation", "test")
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunPaths:
    """The files of a run directory (see the module docstring)."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    user_vocabulary = property(lambda self: self.root / "user_vocabulary.json")
    item_vocabulary = property(lambda self: self.root / "item_vocabulary.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    logs = property(lambda self: self.root / "logs")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    training_plot = property(lambda self: self.plots / "training.png")
    long_tail_plot = property(lambda self: self.plots / "long_tail.png")

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/best.weights.h5`` or ``checkpoints/last.weights.h5``."""
        if which not in CHECKPOINTS:
            raise RunError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {which!r}")
        return self.checkpoints / f"{which}.weights.h5"

    def owned(self) -> list[Path]:
        """Everything a run writes (what ``--overwrite`` removes; other files are left alone)."""
        return [self.config, self.user_vocabulary, self.item_vocabulary, self.checkpoints, self.logs, self.history,
                self.metrics, self.plots]


def claim_run_dir(root: str | Path, *, overwrite: bool = False) -> RunPaths:
    """Create (or, with ``overwrite``, clear the run files of) a run directory.

    Raises:
        RunError: ``root`` is a file, or a non-empty directory and ``overwrite`` is false.
    """
    paths = RunPaths(Path(root))
    if paths.root.exists() and not paths.root.is_dir():
        raise RunError(f"run directory '{paths.root}' exists and is not a directory")
    present = sorted(entry.name for entry in paths.root.iterdir()) if paths.root.is_dir() else []
    if present and not overwrite:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise RunError(f"run directory '{paths.root}' is not empty (it holds {shown}); pass --overwrite to "
                       f"replace its run files, or choose another --run-dir")
    for path in paths.owned():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths


def check_data_source(config: Config) -> None:
    """``data.path`` must name a registered dataset or an existing file (checked before a run starts)."""
    path = config.data.path
    if path not in DATASETS and not Path(path).is_file():
        raise ConfigError(f"data.path: '{path}' is neither a registered dataset ({', '.join(DATASETS)}) "
                          f"nor an existing file")


def resolve_paths(config: Config) -> Config:
    """The config with relative file paths made absolute, so a run re-evaluates from any directory."""
    data = config.data
    update = {}
    if data.path not in DATASETS and Path(data.path).is_file():
        update["path"] = str(Path(data.path).resolve())
    for key in ("user_features", "item_features"):
        spec = getattr(data, key)
        if spec is not None and Path(spec.path).is_file():
            update[key] = spec.model_copy(update={"path": str(Path(spec.path).resolve())})
    return config.model_copy(update={"data": data.model_copy(update=update)}) if update else config


def evaluation_payload(result: EvaluationResult) -> dict:
    """One split's entry of ``metrics.json``: every metric (fractions), ``num_queries`` and the
    per-popularity-group ``long_tail_recall`` (K -> 10 contributions summing to Recall@K)."""
    payload = result.to_dict()
    out = dict(payload["metrics"])
    out["num_queries"] = payload["num_queries"]
    if "long_tail_recall" in payload:
        out["long_tail_recall"] = payload["long_tail_recall"]
    return out


def evaluate_splits(model, config: Config, prepared: PreparedData, splits: Sequence[str] = SPLITS) -> dict:
    """Full-ranking metrics of ``model`` on the named splits: split -> :func:`evaluation_payload`."""
    out = {}
    for split in splits:
        if split not in SPLITS:
            raise RunError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        result = evaluate_model(model, getattr(prepared.split, split), max_history=config.data.max_history,
                                ks=config.evaluation.ks, exclude_seen=exclude_seen(config),
                                item_counts=prepared.item_counts)
        out[split] = evaluation_payload(result)
    return out


def load_run_model(config: Config, prepared: PreparedData, checkpoint: str | Path):
    """Rebuild the model of a run from its config and data, and load a checkpoint's weights."""
    model = build_model(config, prepared)
    # HDF5 weights load into a built model: create every variable by calling both towers.
    model(query_features(np.zeros(1, dtype=np.int64), Ragged.from_rows([[]]), config.data.max_history))
    model.candidate_embeddings()
    with without_get_config_warning():
        model.load_weights(str(checkpoint))
    return model


def check_vocabularies(paths: RunPaths, prepared: PreparedData) -> None:
    for kind, path, built in (("user", paths.user_vocabulary, prepared.users), ("item", paths.item_vocabulary,
                                                                               prepared.items)):
        saved = Vocabulary.load(path)
        if saved.tokens != built.tokens:
            raise RunError(f"the data changed since the run: the {kind} ids read from data.path differ from "
                           f"'{path}' ({built.size} ids now, {saved.size} saved)")


def train_run(config: Config, run_dir: str | Path, *, overwrite: bool = False, callbacks=(), stream=None) -> dict:
    """Train ``config`` into a run directory and return what it wrote to ``metrics.json``.

    Checks the data source and claims the directory before any work, seeds everything and
    (``train.deterministic``) turns on deterministic ops, writes config and vocabularies, runs
    :func:`tfsoft.training.train` with checkpoint/history/TensorBoard/progress callbacks, then
    evaluates the best checkpoint on validation and test and draws the plots.

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
    paths = claim_run_dir(run_dir, overwrite=overwrite)
    make_deterministic(config.train.seed, ops=config.train.deterministic)
    prepared = prepare_data(config.data)
    atomic_write_text(paths.config, config_to_yaml(config))
    prepared.save_vocabularies(paths.root)

    monitor, mode = config.train.monitor, "min" if "loss" in config.train.monitor else "max"
    best = AtomicModelCheckpoint(paths.checkpoint("best"), monitor=monitor, mode=mode, save_best_only=True)
    last = AtomicModelCheckpoint(paths.checkpoint("last"))
    history = HistoryCSV(paths.history)
    progress = ProgressLine(config.train.epochs, monitor=monitor, stream=stream)
    board = keras.callbacks.TensorBoard(log_dir=str(paths.logs), write_graph=False, profile_batch=0)
    try:
        result = train(config, prepared=prepared, callbacks=[best, last, history, board, progress, *callbacks],
                       deterministic=config.train.deterministic)
    except KeyboardInterrupt:
        progress.close()
        raise TrainingInterrupted(_interrupted_message(paths, config, best, last, history)) from None
    if best.saved_epoch is None:
        raise RunError(f"no epoch reported {monitor}, so no best checkpoint was written to '{paths.checkpoint('best')}'")

    with without_get_config_warning():
        result.model.load_weights(str(paths.checkpoint("best")))
    metrics = evaluate_splits(result.model, config, prepared)
    metrics.update(best_epoch=best.saved_epoch, epochs_run=history.epochs_done, monitor=monitor,
                   train_seconds=result.train_seconds, train_examples=result.examples)
    from tfsoft.plots import plot_long_tail, plot_training

    plot_training(result.history, paths.training_plot, ks=config.evaluation.ks, best_epoch=best.saved_epoch)
    plot_long_tail(metrics["test"].get("long_tail_recall", {}), paths.long_tail_plot, split="test")
    atomic_write_json(paths.metrics, metrics)
    return metrics


def _interrupted_message(paths: RunPaths, config: Config, best, last, history: HistoryCSV) -> str:
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


def evaluate_run(run_dir: str | Path, *, splits: Sequence[str] = SPLITS, checkpoint: str = "best") -> dict:
    """Re-evaluate a saved run: rebuild data and model from ``config.yaml``, load a checkpoint,
    and return split -> metrics, exactly as ``metrics.json`` holds them for the best checkpoint."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise RunError(f"run directory '{paths.root}' does not exist")
    if not paths.config.is_file():
        raise RunError(f"'{paths.root}' is not a tfsoft run directory: config.yaml is missing")
    weights = paths.checkpoint(checkpoint)
    if not weights.is_file():
        raise RunError(f"'{weights}' does not exist: the run was interrupted before it wrote a {checkpoint} checkpoint")
    config = load_config(paths.config)
    make_deterministic(config.train.seed, ops=config.train.deterministic)
    prepared = prepare_data(config.data)
    check_vocabularies(paths, prepared)
    model = load_run_model(config, prepared, weights)
    return evaluate_splits(model, config, prepared, splits)


def recommend(run_dir: str | Path, user, *, k: int = 10, exclude_seen: bool = True, checkpoint: str = "best",
              export_dir: str | Path | None = None) -> dict:
    """Top-``k`` items for one user of a saved run, from the user's whole history.

    The query reads the user's most recent ``data.max_history`` interactions (all of them,
    test items included: this is "what next, now"), scores the whole catalog, never returns
    the OOV row and, with ``exclude_seen``, skips items the user already has.

    With ``export_dir`` the answer comes from the newest exported version instead (its
    ``serving_default``/``top_k_excluding`` signature, exactly what TF Serving would run),
    fed with the same raw user id and history.

    Returns:
        ``{"user": raw id, "history": [raw ids, oldest first], "items": [raw ids], "scores": [...]}``
        (plus ``"export_version"`` when answered by an export).
    """
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise RunError(f"'{paths.root}' is not a tfsoft run directory: config.yaml is missing")
    if k < 1:
        raise RunError(f"k must be >= 1; got {k}")
    config = load_config(paths.config)
    prepared = prepare_data(config.data)
    check_vocabularies(paths, prepared)
    index = int(prepared.users.lookup([user])[0])
    if index == 0:
        examples = ", ".join(map(str, prepared.users.tokens[:5]))
        raise RunError(f"user {user!r} is not in the run's user vocabulary (e.g. {examples})")
    frame = prepared.interactions
    raw_user = prepared.users.tokens[index - 1]
    history = prepared.items.lookup(frame.loc[frame["user"] == raw_user, "item"])
    answer = {"user": raw_user, "history": prepared.items.ids(history[-config.data.max_history:])}
    if export_dir is not None:
        return {**answer, **_recommend_from_export(export_dir, raw_user, prepared.items.ids(history), k, exclude_seen)}
    model = load_run_model(config, prepared, paths.checkpoint(checkpoint))
    features = query_features(np.array([index]), Ragged.from_rows([history]), config.data.max_history)
    scores = (model(features).numpy() @ model.candidate_embeddings().numpy().T)[0]
    scores[0] = -np.inf
    if exclude_seen:
        scores[history] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    top = np.argsort(-scores, kind="stable")[:k]
    return {**answer, "items": prepared.items.ids(top), "scores": [float(s) for s in scores[top]]}


def _recommend_from_export(export_dir, raw_user, raw_history: list, k: int, exclude_seen: bool) -> dict:
    from tfsoft.export.servable import LOWEST_SCORE
    from tfsoft.serving.client import ids_array
    from tfsoft.serving.repository import ModelRepository

    repository = ModelRepository(export_dir, "local", poll_seconds=0)
    if not repository.refresh():
        raise RunError(f"'{export_dir}' holds no loadable exported version; write one with tfsoft export")
    loaded = repository.get("local")
    signature = "top_k_excluding" if exclude_seen else "serving_default"
    inputs = {}
    for name in loaded.input_specs(signature):
        if name == "user_id":
            inputs[name] = ids_array([raw_user])
        elif name in ("history", "exclude_item_ids"):
            inputs[name] = ids_array(raw_history).reshape(1, -1)
    outputs = loaded.predict(signature, inputs)
    exported_k = outputs["item_ids"].shape[1]
    if k > exported_k:
        raise RunError(f"version {loaded.version} of '{export_dir}' returns the top {exported_k}; ask for "
                       f"--k {exported_k} or less, or export again with --k {k}")
    items, scores = outputs["item_ids"][0][:k].tolist(), outputs["scores"][0][:k].tolist()
    kept = [(item.decode() if isinstance(item, bytes) else item, score) for item, score in zip(items, scores)
            if score > LOWEST_SCORE]
    return {"items": [item for item, _ in kept], "scores": [float(score) for _, score in kept],
            "export_version": loaded.version}
