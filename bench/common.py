"""Helpers shared by the benchmarks: machine description, mean ± std, epoch timer, atomic JSON output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import datetime, timezone

from tfsoft.backend import keras
from tfsoft.files import atomic_write_json


def machine() -> dict:
    import numpy
    import tensorflow

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "numpy": numpy.__version__,
        "gpus": [d.name for d in tensorflow.config.list_physical_devices("GPU")],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def mean_std(values) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def write_result(path: str, payload: dict) -> None:
    atomic_write_json(path, payload)
    print(f"wrote {path}")


def merge_result(path: str, header: dict, name: str, runs: list[dict], summarise) -> dict:
    """Add ``runs`` to ``results[name]`` of the JSON at ``path`` as the file holds it *now*, and
    write ``summarise(all runs of name)`` there, keeping every other entry: two benchmark
    processes (one per core) can share one results file, on different variants or on different
    seeds of the same variant (runs are keyed by ``seed``; this process's run wins for a seed
    both hold). The read-modify-write runs under an exclusive ``flock`` on ``PATH.lock`` and
    the file itself is replaced atomically. Returns the results as written."""
    import fcntl
    import json
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(target.read_text()).get("results", {}) if target.is_file() else {}
        by_seed = {r["seed"]: r for r in results.get(name, {}).get("runs", [])}
        by_seed.update({r["seed"]: r for r in runs})
        results[name] = summarise(sorted(by_seed.values(), key=lambda r: r["seed"]))
        write_result(str(target), {**header, "results": results})
    return results


class EpochTimer(keras.callbacks.Callback):
    """Wall and CPU time of each epoch, from its first step to its last.

    Timing inside one ``fit`` leaves out what happens between epochs: tearing down one
    epoch's input iterator sometimes stalls for ~0.5 s on this machine, whatever the model,
    which swamped the step-time differences when every epoch was its own ``fit`` call.
    """

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._started[0])
        self.cpu.append(time.process_time() - self._started[1])
