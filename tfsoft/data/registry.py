"""Known public datasets, loadable by name, with their expected statistics.

The files themselves are never part of the repository. They are looked up in, in order:
``$TFSOFT_DATA_DIR``, then ``../shared/data`` next to the checkout (and next to the current
directory). A real user downloads them from the public source named in each entry and points
``TFSOFT_DATA_DIR`` at the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tfsoft.data.reader import ColumnSpec, read_interactions
from tfsoft.errors import DataError

DATA_DIR_VARIABLE = "TFSOFT_DATA_DIR"


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset tfsoft knows by name.

    Attributes:
        name: registry key.
        filename: file name inside the data directory.
        columns: which columns hold user, item, time and weight.
        statistics: interactions/users/items the file must have (checked on load).
        protocol: the evaluation protocol its published numbers use (split name, window,
            max_history, ratios).
        source: where a user gets the file.
        description: one line for humans.
    """

    name: str
    filename: str
    columns: ColumnSpec
    statistics: dict
    protocol: dict
    source: str
    description: str
    delimiter: str | None = None
    extra_files: dict = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="lastfm_small",
            filename="lastfm_small.csv",
            columns=ColumnSpec(user="session_id", item="item_id", weight="rating"),
            statistics={"interactions": 52551, "users": 1090, "items": 3646},
            protocol={"split": "leave_one_out", "window": 20, "max_history": 20},
            source="https://github.com/Furyton/CSRec (Data/lastfm_small.csv); HetRec 2011 Last.FM",
            description="Last.FM listening sequences as processed for the CSRec paper (5-core, file order = time)",
        ),
        DatasetInfo(
            name="ml-100k",
            filename="ml-100k.inter",
            columns=ColumnSpec(user="user_id", item="item_id", time="timestamp", weight="rating"),
            statistics={"interactions": 100000, "users": 943, "items": 1682},
            protocol={"split": "ratio", "ratios": [0.8, 0.1, 0.1], "max_history": 30},
            source="https://grouplens.org/datasets/movielens/100k/ (RecBole atomic files: dataset/ml-100k)",
            description="MovieLens 100K ratings with user (age, gender, occupation) and item (year, genres) features",
            delimiter="\t",
            extra_files={"user_features": "ml-100k.user", "item_features": "ml-100k.item"},
        ),
        DatasetInfo(
            name="ml-1m",
            filename="ml-1m.parquet",
            columns=ColumnSpec(user="user_id", item="item_id", time="timestamp", weight="rating"),
            statistics={"interactions": 1000209, "users": 6040, "items": 3706},
            protocol={"split": "leave_one_out", "max_history": 30},
            source="https://grouplens.org/datasets/movielens/1m/ (rows sorted by user, then time)",
            description="MovieLens 1M ratings; leave-one-out on file order reproduces the standard split",
        ),
    )
}


def data_dir_candidates() -> list[Path]:
    """Folders searched for dataset files, in order."""
    candidates = []
    if os.environ.get(DATA_DIR_VARIABLE):
        candidates.append(Path(os.environ[DATA_DIR_VARIABLE]).expanduser())
    checkout = Path(__file__).resolve().parents[2]
    candidates += [checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "data"]
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_path(name: str) -> Path:
    """Path of a registered dataset's file; a clear error tells where it was looked for."""
    info = dataset_info(name)
    searched = data_dir_candidates()
    for folder in searched:
        if (folder / info.filename).is_file():
            return folder / info.filename
    raise DataError(
        f"dataset {name!r} ({info.filename}) not found in: {', '.join(map(str, searched))}. "
        f"Download it from {info.source} and set {DATA_DIR_VARIABLE} to its folder"
    )


def load_interactions(source: str, columns: ColumnSpec = ColumnSpec(), *, delimiter: str | None = None) -> pd.DataFrame:
    """The canonical interactions table of ``source``: a registered dataset name (its own
    columns and checks apply; ``columns``/``delimiter`` are ignored), else a file path."""
    if source in DATASETS:
        return load_dataset(source)
    return read_interactions(source, columns, delimiter=delimiter)


def load_dataset(name: str, *, check_statistics: bool = True) -> pd.DataFrame:
    """Read a registered dataset into the canonical interactions table.

    Raises:
        DataError: the file is missing, or (with ``check_statistics``) it does not have the
            registered number of interactions, users and items (a different file version).
    """
    info = dataset_info(name)
    path = dataset_path(name)
    frame = read_interactions(path, info.columns, delimiter=info.delimiter)
    if check_statistics:
        found = {"interactions": len(frame), "users": frame["user"].nunique(), "items": frame["item"].nunique()}
        if found != info.statistics:
            raise DataError(
                f"dataset {name!r} at '{path}' has {found}, expected {info.statistics}: "
                "a different version of the file? Pass check_statistics=False to use it anyway"
            )
    return frame
