"""Helpers shared by the benchmarks: machine description, mean ± std, atomic JSON output."""

from __future__ import annotations

import os
import platform
import statistics
from datetime import datetime, timezone

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
