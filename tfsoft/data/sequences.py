"""Training and evaluation examples for sequential (history-reading) towers.

Histories are left-padded with :data:`tfsoft.data.vocabulary.PAD_INDEX` (0) to a fixed
``max_history`` (paper settings: 20 for Last.FM, 30 for MovieLens), keeping the most recent
items, so the last column is always the newest item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfsoft.data.ragged import Ragged
from tfsoft.data.vocabulary import PAD_INDEX
from tfsoft.errors import DataError

EXAMPLE_MODES = ("position", "user", "window")
#: modes whose targets are [E, L]: a query per position
SEQUENCE_MODES = ("user", "window")


def left_pad(rows: Ragged, max_history: int) -> np.ndarray:
    """The last ``max_history`` values of every row, left-padded with 0: int64 [R, max_history].

    Example:
        >>> left_pad(Ragged.from_rows([[1, 2, 3], [4]]), 2).tolist()
        [[2, 3], [0, 4]]
    """
    if max_history < 1:
        raise DataError(f"max_history must be >= 1; got {max_history}")
    out = np.full((len(rows), max_history), PAD_INDEX, dtype=np.int64)
    lengths = np.minimum(rows.lengths, max_history)
    ends = rows.offsets[1:]
    for column in range(max_history):
        # Column max_history-1-j holds the item j steps back from the end, where it exists.
        back = max_history - 1 - column
        present = lengths > back
        out[present, column] = rows.values[ends[present] - 1 - back]
    return out


@dataclass(frozen=True)
class NextItemExamples:
    """Next-item training examples.

    Attributes:
        user: [E] user index.
        history: [E, L] left-padded previous items.
        target: [E] the item to predict (``mode="position"``), or [E, L] the next item at
            every history position, 0 where padded (``mode="user"``/``"window"``, SASRec-style
            training).
        row: [E] (position mode) index into the flat training values of the target, so
            per-interaction columns such as weights can be looked up; None otherwise.
    """

    user: np.ndarray
    history: np.ndarray
    target: np.ndarray
    row: np.ndarray | None

    def __len__(self) -> int:
        return len(self.user)

    def as_features(self) -> dict[str, np.ndarray]:
        return {"user": self.user, "history": self.history, "target": self.target}


def next_item_examples(
    train: Ragged, users: np.ndarray, max_history: int, mode: str = "position", min_history: int = 1
) -> NextItemExamples:
    """Build next-item examples from training sequences.

    ``mode="position"``: one example per training interaction at position p >= min_history of
    its sequence: history = the ``max_history`` items before p, target = item p (standard
    next-item training, GRU4Rec/CSRec). With ``min_history=0`` every interaction is a target,
    which is what a user-id tower needs.

    ``mode="user"``: one example per sequence with at least two items: history = the last
    ``max_history`` items but one, target = the same window shifted by one (every position
    is a target in one forward pass, SASRec training). Only the last ``max_history``
    transitions of a long sequence are trained.

    ``mode="window"``: as ``user``, but a sequence of n items is cut, from its end, into
    windows of ``max_history`` transitions (the first window shorter, left-padded), so every
    training interaction but the first of its sequence is a target exactly once. Position
    p of a window reads the items of that window up to p (SASRec and the CSRec protocol cut
    long histories the same way).

    Example:
        >>> ex = next_item_examples(Ragged.from_rows([[1, 2, 3, 4, 5]]), np.array([7]), 2, mode="window")
        >>> ex.history.tolist(), ex.target.tolist()
        ([[3, 4], [1, 2]], [[4, 5], [2, 3]])
    """
    if mode not in EXAMPLE_MODES:
        raise DataError(f"example mode must be one of {EXAMPLE_MODES}; got {mode!r}")
    if min_history < 0:
        raise DataError(f"min_history must be >= 0; got {min_history}")
    users = np.asarray(users, dtype=np.int64)
    if mode == "position":
        within = np.arange(len(train.values)) - np.repeat(train.offsets[:-1], train.lengths)
        rows = np.flatnonzero(within >= min_history)
        seq_of_row = train.row_ids()[rows]
        starts = np.maximum(rows - max_history, train.offsets[seq_of_row])
        history = np.full((len(rows), max_history), PAD_INDEX, dtype=np.int64)
        for column in range(max_history):
            back = max_history - column  # items back from the target
            source = rows - back
            present = source >= starts
            history[present, column] = train.values[source[present]]
        return NextItemExamples(users[seq_of_row], history, train.values[rows].astype(np.int64), rows)
    keep = np.flatnonzero(train.lengths >= 2)
    if mode == "user":
        inputs = Ragged.from_rows([train[i][:-1] for i in keep])
        outputs = Ragged.from_rows([train[i][1:] for i in keep])
        return NextItemExamples(users[keep], left_pad(inputs, max_history), left_pad(outputs, max_history), None)
    owners, inputs, outputs = [], [], []
    for i in keep:
        sequence = train[i]
        for end in range(len(sequence) - 1, 0, -max_history):  # transitions [start, end) of s[:-1] -> s[1:]
            start = max(0, end - max_history)
            owners.append(i)
            inputs.append(sequence[start:end])
            outputs.append(sequence[start + 1:end + 1])
    owners = np.asarray(owners, dtype=np.int64)
    return NextItemExamples(users[owners], left_pad(Ragged.from_rows(inputs), max_history),
                            left_pad(Ragged.from_rows(outputs), max_history), None)


def query_features(user: np.ndarray, history: Ragged, max_history: int) -> dict[str, np.ndarray]:
    """Features of evaluation/serving queries: user index and left-padded recent history."""
    return {"user": np.asarray(user, dtype=np.int64), "history": left_pad(history, max_history)}
