"""Keras callbacks that a training run adds to ``fit``: crash-safe checkpoints, the per-epoch
history file and a progress line.

They only read the epoch logs (``loss``, ``val_recall@10``, ...; the full-ranking metrics come
from :class:`tfsoft.validation.RankingValidation`, which ``TwoTowerModel.fit`` runs first), so
they work with any model and any distribution strategy.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import sys
import time
from pathlib import Path

from tfsoft.backend import keras
from tfsoft.files import atomic_output, atomic_write_text, file_entry


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """:class:`keras.callbacks.ModelCheckpoint` of the weights that writes each checkpoint to a
    temporary file and renames it into place, so an interrupted save (Ctrl-C, a killed job)
    leaves the previous checkpoint intact instead of a truncated file.

    The format is the Keras ``.weights.h5`` file, whose variables are keyed by their object
    path (``query_tower/...``), so it loads into a model rebuilt from the same config.

    Records which epoch (1-based) the file on disk holds in :attr:`saved_epoch` and, for
    ``save_best_only``, its monitored value in :attr:`saved_value`.

    With ``manifest=True`` (what ``tfsoft train`` uses) each write also records the file's sha256
    and size in ``manifest.json`` next to it (:func:`tfsoft.runs.record_checkpoint`), which readers
    check before loading it.

    Example:
        >>> best = AtomicModelCheckpoint("run/checkpoints/best.weights.h5", monitor="val_ndcg@10",
        ...                              mode="max", save_best_only=True)  # doctest: +SKIP
    """

    def __init__(self, filepath, *, manifest: bool = False, **kwargs):
        if not str(filepath).endswith(".weights.h5"):
            raise ValueError(f"AtomicModelCheckpoint writes Keras weights files; the path must end in .weights.h5, "
                             f"got {str(filepath)!r}")
        super().__init__(str(filepath), save_weights_only=True, **kwargs)
        self.manifest = manifest
        self.saved_epoch: int | None = None
        self.saved_value: float | None = None
        self._epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch
        super().on_epoch_end(epoch, logs)

    def _save_handler(self, filepath):
        save_weights_atomically(self.model, filepath, manifest=self.manifest)
        self.saved_epoch = self._epoch + 1
        if self.save_best_only:
            self.saved_value = float(self.best)


def save_weights_atomically(model, path, *, manifest: bool = False) -> None:
    """``model.save_weights`` into a temporary file renamed to ``path`` (``*.weights.h5``).

    With ``manifest``, the file's sha256 and size go into ``manifest.json`` next to it: announced
    before the rename and confirmed after it (:func:`tfsoft.runs.record_checkpoint`), so a write
    stopped anywhere leaves a checkpoint that matches the manifest."""
    from tfsoft.runs import record_checkpoint

    with atomic_output(path, suffix=".weights.h5") as tmp, without_get_config_warning():
        model.save_weights(str(tmp))
        if manifest:
            entry = file_entry(tmp)  # the bytes about to be renamed into place
            record_checkpoint(path, entry, pending=True)
    if manifest:
        record_checkpoint(path, entry)


class _DropGetConfigWarning(logging.Filter):
    def filter(self, record):
        return "non-serializable objects" not in record.getMessage()


@contextlib.contextmanager
def without_get_config_warning():
    """Keras warns on every weights save that a model without ``get_config`` has an empty
    config; a weights file needs none (the model is rebuilt from the run's config.yaml)."""
    logger, drop = logging.getLogger("tensorflow"), _DropGetConfigWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class HistoryCSV(keras.callbacks.Callback):
    """Writes every epoch's logs to a CSV file (one row per epoch, rewritten atomically after
    each epoch; columns: ``epoch`` (1-based), ``seconds``, then the logged metrics in order)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        self.finished = False  # fit returned (on_train_end ran)
        self._started = 0.0

    def on_train_begin(self, logs=None):
        self.rows, self.finished = [], False

    def on_train_end(self, logs=None):
        self.finished = True

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._started, 3)}
        row.update({name: float(value) for name, value in (logs or {}).items()})
        self.rows.append(row)
        atomic_write_text(self.path, history_to_csv(self.rows))

    @property
    def epochs_done(self) -> int:
        return len(self.rows)


def history_to_csv(rows: list[dict]) -> str:
    """CSV text of per-epoch rows (union of their keys, first-seen order; missing cells empty)."""
    columns: list[str] = []
    for row in rows:
        columns += [name for name in row if name not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class ProgressLine(keras.callbacks.Callback):
    """One line per epoch (``epoch 3/40  loss 4.1234  val_recall@10 0.1520 ... 12.3s``), and,
    when the stream is a terminal, a tqdm bar over the steps of the running epoch.

    Args:
        epochs: planned epochs (for ``3/40``).
        monitor: the metric that picks the best epoch; the line marks a new best with ``*``.
        stream: where to write (standard error by default, so standard output stays data).
        bar: show the per-step tqdm bar; default: only when ``stream`` is a terminal.

    Per-step cost: without the bar it has no batch hooks at all, so Keras does not call back
    after every step (nor turn every step's logs into Python numbers, a device sync that made
    Keras warn "Callback method `on_train_batch_end` is slow"). With the bar, each step only
    advances it; the loss shown next to it is read at most every :attr:`LOSS_SECONDS`.
    """

    LOSS_SECONDS = 0.5

    def __init__(self, epochs: int, *, monitor: str, stream=None, bar: bool | None = None):
        super().__init__()
        self._supports_tf_logs = True  # batch logs stay tensors: no per-step sync for the bar
        self.epochs, self.monitor = epochs, monitor
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.mode_max = "loss" not in monitor
        self.best = -math.inf if self.mode_max else math.inf
        self._bar = None
        self._started = 0.0
        self._loss_read = 0.0

    def _implements_train_batch_hooks(self):
        return bool(self.bar)  # no bar, no per-step work: Keras skips the batch hooks

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        if self.bar:
            from tqdm.auto import tqdm

            steps = self.params.get("steps") if self.params else None
            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream, leave=False,
                             unit="step", dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.perf_counter()
        if logs and "loss" in logs and now - self._loss_read >= self.LOSS_SECONDS:
            self._loss_read = now
            self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.close()
        logs = logs or {}
        value = logs.get(self.monitor)
        improved = value is not None and (value > self.best if self.mode_max else value < self.best)
        if improved:
            self.best = float(value)
        shown = [name for name in logs if name == "loss" or name.endswith("@10") or name == self.monitor]
        metrics = "  ".join(f"{name} {float(logs[name]):.4f}" for name in dict.fromkeys(shown))
        width = len(str(self.epochs))
        print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {metrics}  {time.perf_counter() - self._started:.1f}s"
              f"{'  *' if improved else ''}", file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Close the step bar (``fit`` skips ``on_train_end`` when interrupted)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
