"""PNG plots of a training run: learning curves and the long-tail recall breakdown.

Drawn with matplotlib's non-interactive Agg backend (no display needed) and written
atomically. Imported lazily by :mod:`tfsoft.runs` so that matplotlib loads only when a run
draws its plots.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from tfsoft.files import atomic_write_bytes  # noqa: E402


def _save(figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_training(history: Mapping[str, Sequence[float]], path: str | os.PathLike, *, ks: Sequence[int] = (10, 20),
                  best_epoch: int | None = None) -> Path:
    """Training loss (left) and validation Recall@K / NDCG@K (right) per epoch.

    Args:
        history: per-epoch logs, e.g. ``{"loss": [...], "val_recall@10": [...], ...}``.
        path: PNG file to write.
        ks: cut-offs whose Recall/NDCG curves are drawn (those present in ``history``).
        best_epoch: 1-based epoch to mark with a vertical line.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    left.plot(epochs, history.get("loss", []), marker="o", label="training loss")
    if "val_loss" in history:
        left.plot(epochs, history["val_loss"], marker="o", label="validation loss")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    for k in ks:
        for name, style in (("recall", "-"), ("ndcg", "--")):
            values = history.get(f"val_{name}@{k}")
            if values:
                right.plot(range(1, len(values) + 1), values, style, marker="o", label=f"{name}@{k}")
    right.set(xlabel="epoch", ylabel="validation metric", title="validation (full ranking)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    left.legend()
    if right.lines:
        right.legend()
    return _save(figure, path)


def plot_long_tail(long_tail_recall: Mapping, path: str | os.PathLike, *, split: str = "test") -> Path:
    """Each popularity group's contribution to Recall@K (group 0 = most popular items; the
    bars of one K sum to Recall@K), one bar series per K.

    Args:
        long_tail_recall: K -> per-group contributions (:attr:`EvaluationResult.long_tail_recall`).
        path: PNG file to write.
        split: named in the title.
    """
    figure, axis = plt.subplots(figsize=(8, 4))
    series = sorted(long_tail_recall.items(), key=lambda item: int(item[0]))
    width = 0.8 / max(len(series), 1)
    for index, (k, values) in enumerate(series):
        positions = [group + (index - (len(series) - 1) / 2) * width for group in range(len(values))]
        axis.bar(positions, values, width=width, label=f"recall@{k} (total {sum(values):.4f})")
    groups = len(series[0][1]) if series else 0
    axis.set_xticks(range(groups))
    axis.set(xlabel="popularity group (0 = most popular, equal interaction mass)", ylabel="contribution to recall",
             title=f"{split} recall by item popularity group")
    axis.grid(axis="y", alpha=0.3)
    if series:
        axis.legend()
    return _save(figure, path)
