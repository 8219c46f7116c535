"""Side features of users or items, aligned with an id vocabulary.

A :class:`FeatureTable` holds one array per feature with a row per vocabulary index (row 0 =
OOV/padding gets the "missing" value), so a tower can look features up by id and the whole
catalog can be embedded at once:

* categorical: int codes, 0 = missing/unknown, with the code vocabulary;
* numeric: float32 standardised with the training mean/std (missing -> 0 = the mean);
* multi-valued (e.g. genres "Action Comedy"): int codes padded with 0 to the longest list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfsoft.data.reader import _guess_delimiter, _show
from tfsoft.data.vocabulary import Vocabulary
from tfsoft.errors import DataError


@dataclass(frozen=True)
class FeatureTable:
    """Feature arrays indexed by vocabulary index.

    Attributes:
        categorical: name -> int64 [num_indices] codes (0 = missing).
        categorical_sizes: name -> number of codes including 0.
        numeric: name -> float32 [num_indices] standardised values.
        numeric_stats: name -> (mean, std) used for standardisation.
        multivalued: name -> int64 [num_indices, max_tokens] codes padded with 0.
        multivalued_sizes: name -> number of codes including 0.
        vocabularies: name -> the raw values of the codes 1.. (for serving and inspection).
    """

    num_indices: int
    categorical: dict = field(default_factory=dict)
    categorical_sizes: dict = field(default_factory=dict)
    numeric: dict = field(default_factory=dict)
    numeric_stats: dict = field(default_factory=dict)
    multivalued: dict = field(default_factory=dict)
    multivalued_sizes: dict = field(default_factory=dict)
    vocabularies: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [*self.categorical, *self.numeric, *self.multivalued]


def _aligned(frame: pd.DataFrame, id_column: str, vocabulary: Vocabulary, where: str) -> pd.DataFrame:
    if id_column not in frame.columns:
        raise DataError(f"column {id_column!r} missing from {where}; found: {', '.join(map(str, frame.columns))}")
    duplicated = frame[id_column].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"{where} lists id {_show(frame[id_column].iloc[row])} twice (row {row + 1}); one row per id expected")
    index = vocabulary.lookup(frame[id_column])
    aligned = pd.DataFrame(index=np.arange(vocabulary.num_indices))
    known = index > 0
    for column in frame.columns:
        values = pd.Series([None] * vocabulary.num_indices, dtype=object)
        values.iloc[index[known]] = frame[column].to_numpy()[known]
        aligned[column] = values.to_numpy()
    return aligned


def build_feature_table(
    frame: pd.DataFrame,
    id_column: str,
    vocabulary: Vocabulary,
    *,
    categorical: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    multivalued: dict[str, str] | None = None,
    where: str = "feature table",
) -> FeatureTable:
    """Align a per-id feature DataFrame with ``vocabulary`` and encode every feature.

    Args:
        frame: one row per id; ids not in the vocabulary are ignored, vocabulary ids missing
            from the frame get "missing" features.
        id_column: the id column.
        categorical / numeric: feature columns of each kind.
        multivalued: column -> separator (e.g. ``{"genres": " "}``).
        where: name of the source for error messages.
    """
    multivalued = multivalued or {}
    for name in [*categorical, *numeric, *multivalued]:
        if name not in frame.columns:
            raise DataError(f"feature column {name!r} missing from {where}; found: {', '.join(map(str, frame.columns))}")
    aligned = _aligned(frame, id_column, vocabulary, where)
    table = FeatureTable(num_indices=vocabulary.num_indices)
    for name in categorical:
        raw = aligned[name]
        present = raw.notna().to_numpy()
        uniques = pd.unique(raw[present].astype(str))
        codes = np.zeros(vocabulary.num_indices, dtype=np.int64)
        codes[present] = pd.Index(uniques).get_indexer(raw[present].astype(str)) + 1
        table.categorical[name], table.categorical_sizes[name] = codes, len(uniques) + 1
        table.vocabularies[name] = [str(u) for u in uniques]
    for name in numeric:
        values = pd.to_numeric(aligned[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = aligned[name].notna().to_numpy() & np.isnan(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"numeric feature {name!r} of {where} has non-numeric value {_show(aligned[name].iloc[row])}")
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
        std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
        std = std if std > 0 else 1.0
        table.numeric[name] = np.nan_to_num((values - mean) / std, nan=0.0).astype(np.float32)
        table.numeric_stats[name] = (mean, std)
    for name, separator in multivalued.items():
        lists = [str(v).split(separator) if v is not None and str(v) != "nan" else [] for v in aligned[name]]
        lists = [[token.strip() for token in tokens if token.strip()] for tokens in lists]
        uniques = pd.unique(pd.Series([t for tokens in lists for t in tokens], dtype=object))
        lookup = {token: code + 1 for code, token in enumerate(uniques)}
        width = max(1, max(len(tokens) for tokens in lists))
        codes = np.zeros((vocabulary.num_indices, width), dtype=np.int64)
        for row, tokens in enumerate(lists):
            codes[row, : len(tokens)] = [lookup[t] for t in tokens]
        table.multivalued[name], table.multivalued_sizes[name] = codes, len(uniques) + 1
        table.vocabularies[name] = [str(u) for u in uniques]
    return table


def read_feature_file(path: str | os.PathLike, *, delimiter: str | None = None) -> pd.DataFrame:
    """Read a per-id feature file (CSV/TSV, RecBole ``name:type`` headers understood)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file '{path}' does not exist")
    # utf-8-sig: a byte-order mark is not part of the first column's name; only an empty cell is
    # missing ("NA", "null", "None" are ids or category values, as in the interactions reader)
    with open(path, encoding="utf-8-sig") as handle:
        header = handle.readline()
    delimiter = delimiter or _guess_delimiter(path, header)
    try:
        frame = pd.read_csv(path, sep=delimiter, dtype=str, encoding="utf-8-sig", keep_default_na=False,
                            na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"cannot parse feature file '{path}': {error}") from error
    frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    for column in frame.columns:  # ids as ints where the interactions had ints
        if frame[column].str.fullmatch(r"-?(0|[1-9][0-9]*)").all():
            frame[column] = frame[column].astype(np.int64)
    return frame
