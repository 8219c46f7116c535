"""Train / validation / test splits of per-user interaction sequences.

Three protocols, each a pure function of the per-user sequences (time ordered):

* :func:`leave_one_out` — last item of each sequence is the test target, the second-last the
  validation target, the rest is training data (SASRec, SoftRec, CSRec, DeSoRec). With
  ``window`` the histories are first cut into non-overlapping windows taken from the end
  (:func:`cut_windows`, the CSRec protocol on Last.FM: windows of 20 give 3,173 sequences).
* :func:`ratio_split` — each user's interactions are shuffled (seeded) and cut by ratio, e.g.
  8:1:1 (SSM paper §4.1) or 7:1:2 (TIL paper §5.1).
* :func:`temporal_split` — global time cutoffs: train before ``validation_start``, validation
  until ``test_start``, test after.

The functions work on *row numbers* (positions in the canonical interactions table), so any
per-interaction column (item index, weight, timestamp) can be looked up afterwards with
:meth:`Split.map_rows`. For evaluation each query carries a ``history``: the items the model
may read and that are excluded from the ranking when seen items are filtered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfsoft.data.ragged import Ragged
from tfsoft.errors import DataError

PROTOCOLS = ("leave_one_out", "ratio", "temporal")


@dataclass(frozen=True)
class Queries:
    """Evaluation queries: one per (user or window) sequence that has held-out targets.

    Attributes:
        user: [Q] user index of each query.
        sequence: [Q] index of the source sequence (window) of each query.
        history: ragged [Q, *] what precedes the targets (time order).
        targets: ragged [Q, *] held-out items (one for leave-one-out, several otherwise).
    """

    user: np.ndarray
    sequence: np.ndarray
    history: Ragged
    targets: Ragged

    def __len__(self) -> int:
        return len(self.user)

    def map_rows(self, table: np.ndarray) -> "Queries":
        return Queries(self.user, self.sequence, self.history.map_values(table), self.targets.map_values(table))


@dataclass(frozen=True)
class Split:
    """A split of interaction sequences.

    Attributes:
        protocol: one of :data:`PROTOCOLS`.
        train: ragged [S, *] training interactions of each sequence, time order.
        train_user: [S] user index of each training sequence.
        validation, test: :class:`Queries`.
    """

    protocol: str
    train: Ragged
    train_user: np.ndarray
    validation: Queries
    test: Queries

    def map_rows(self, table: np.ndarray) -> "Split":
        """Replace every row number by ``table[row]`` (e.g. the item index of that row)."""
        return Split(
            self.protocol,
            self.train.map_values(table),
            self.train_user,
            self.validation.map_rows(table),
            self.test.map_rows(table),
        )

    def summary(self) -> dict:
        return {
            "protocol": self.protocol,
            "train_sequences": int(len(self.train)),
            "train_interactions": int(len(self.train.values)),
            "validation_queries": int(len(self.validation)),
            "validation_targets": int(len(self.validation.targets.values)),
            "test_queries": int(len(self.test)),
            "test_targets": int(len(self.test.targets.values)),
        }


class _QueryBuilder:
    def __init__(self) -> None:
        self.user: list[int] = []
        self.sequence: list[int] = []
        self.history: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def add(self, user: int, sequence: int, history: np.ndarray, targets: np.ndarray) -> None:
        self.user.append(user)
        self.sequence.append(sequence)
        self.history.append(history)
        self.targets.append(targets)

    def build(self) -> Queries:
        return Queries(
            user=np.asarray(self.user, dtype=np.int64),
            sequence=np.asarray(self.sequence, dtype=np.int64),
            history=Ragged.from_rows(self.history),
            targets=Ragged.from_rows(self.targets),
        )


def cut_windows(sequences: Ragged, users: np.ndarray, window: int) -> tuple[Ragged, np.ndarray]:
    """Cut each sequence into non-overlapping windows of ``window`` items taken from the end.

    Follows the CSRec authors' preprocessing (``dataloaders/utils.py``): a sequence of
    length n <= window stays whole; otherwise windows ``[n-w, n)``, ``[n-2w, n-w)``, ... are
    cut while a full window fits, and when ``n`` is not a multiple of ``w`` the first ``w``
    items form one more window (it overlaps the next one). Windows are returned oldest first.

    Args:
        sequences: ragged [U, *] per-user rows in time order.
        users: [U] user index of each sequence.
        window: window length (>= 3, so leave-one-out keeps a training item).

    Returns:
        The windows as a ragged array and the user index of each window.
    """
    if window < 3:
        raise DataError(f"window must be >= 3 so each window keeps a training item; got {window}")
    rows, owners = [], []
    for sequence, user in zip(sequences, users):
        n = len(sequence)
        if n <= window:
            pieces = [sequence]
        else:
            pieces = []
            end = n
            while end - window >= 0:
                pieces.append(sequence[end - window : end])
                end -= window
            if end > 0:
                pieces.append(sequence[:window])
            pieces.reverse()
        rows.extend(pieces)
        owners.extend([user] * len(pieces))
    return Ragged.from_rows(rows), np.asarray(owners, dtype=np.int64)


def leave_one_out(sequences: Ragged, users: np.ndarray, window: int | None = None) -> Split:
    """Leave-one-out split: last item = test, second-last = validation, the rest = train.

    Sequences shorter than 3 cannot give a training item, a validation and a test target;
    they go to training whole and yield no query. The test query's history includes the
    validation item (everything before the test target), as in SASRec/CSRec evaluation.

    Args:
        sequences: ragged [U, *] per-user rows in time order.
        users: [U] user index of each sequence.
        window: optional window length; see :func:`cut_windows`.
    """
    if window is not None:
        sequences, users = cut_windows(sequences, users, window)
    train_rows, validation, test = [], _QueryBuilder(), _QueryBuilder()
    for index, (sequence, user) in enumerate(zip(sequences, users)):
        if len(sequence) < 3:
            train_rows.append(sequence)
            continue
        train_rows.append(sequence[:-2])
        validation.add(user, index, sequence[:-2], sequence[-2:-1])
        test.add(user, index, sequence[:-1], sequence[-1:])
    return Split(
        "leave_one_out", Ragged.from_rows(train_rows), np.asarray(users, dtype=np.int64),
        validation.build(), test.build(),
    )


def _ratio_sizes(n: int, ratios: np.ndarray) -> tuple[int, int]:
    cut = np.floor(np.cumsum(ratios)[:2] * n + 0.5).astype(int)
    return int(cut[0]), int(cut[1])


def ratio_split(sequences: Ragged, users: np.ndarray, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Per-user random split by ratio (seeded).

    Each user's interactions are shuffled with ``numpy.random.default_rng(seed)`` and cut at
    ``round(n * r_train)`` and ``round(n * (r_train + r_validation))``; the three parts are
    then put back in time order. A user whose validation (or test) part is empty has no
    validation (or test) query. Validation history = train part; test history = train +
    validation parts (what is excluded when seen items are filtered).

    Args:
        ratios: (train, validation, test), positive, normalised to sum to 1.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.shape != (3,) or (ratios < 0).any() or ratios.sum() <= 0 or ratios[0] <= 0:
        raise DataError(f"ratios must be three non-negative numbers with a positive train part; got {list(ratios)}")
    ratios = ratios / ratios.sum()
    rng = np.random.default_rng(seed)
    train_rows, validation, test = [], _QueryBuilder(), _QueryBuilder()
    for index, (sequence, user) in enumerate(zip(sequences, users)):
        order = rng.permutation(len(sequence))
        first, second = _ratio_sizes(len(sequence), ratios)
        train = np.sort(order[:first])
        valid = np.sort(order[first:second])
        held = np.sort(order[second:])
        train_rows.append(sequence[train])
        if len(valid) and len(train):
            validation.add(user, index, sequence[train], sequence[valid])
        if len(held) and len(train) + len(valid):
            test.add(user, index, sequence[np.sort(np.concatenate([train, valid]))], sequence[held])
    return Split(
        "ratio", Ragged.from_rows(train_rows), np.asarray(users, dtype=np.int64),
        validation.build(), test.build(),
    )


def temporal_split(
    sequences: Ragged,
    users: np.ndarray,
    timestamps: np.ndarray,
    validation_start: float,
    test_start: float,
) -> Split:
    """Global temporal split: train ``t < validation_start``, validation
    ``validation_start <= t < test_start``, test ``t >= test_start``.

    Users with no interaction before a part have no history and yield no query for it
    (cold-start users are out of scope of this protocol).

    Args:
        timestamps: [num_rows] time of every row (indexed by the row numbers in ``sequences``).
    """
    if not validation_start <= test_start:
        raise DataError(f"validation_start ({validation_start}) must be <= test_start ({test_start})")
    timestamps = np.asarray(timestamps, dtype=np.float64)
    train_rows, validation, test = [], _QueryBuilder(), _QueryBuilder()
    for index, (sequence, user) in enumerate(zip(sequences, users)):
        times = timestamps[sequence]
        train = sequence[times < validation_start]
        valid = sequence[(times >= validation_start) & (times < test_start)]
        held = sequence[times >= test_start]
        train_rows.append(train)
        if len(valid) and len(train):
            validation.add(user, index, train, valid)
        if len(held) and len(train) + len(valid):
            test.add(user, index, sequence[times < test_start], held)
    return Split(
        "temporal", Ragged.from_rows(train_rows), np.asarray(users, dtype=np.int64),
        validation.build(), test.build(),
    )


def time_quantiles(timestamps: np.ndarray, validation_fraction: float, test_fraction: float) -> tuple[float, float]:
    """Cutoffs such that about the last ``test_fraction`` of interactions (by time) are test
    and the ``validation_fraction`` before them validation."""
    if not (0 <= validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise DataError(
            f"temporal fractions must satisfy 0 <= validation, 0 < test, validation + test < 1; "
            f"got validation={validation_fraction}, test={test_fraction}"
        )
    times = np.asarray(timestamps, dtype=np.float64)
    test_start = float(np.quantile(times, 1 - test_fraction, method="higher"))
    validation_start = float(np.quantile(times, 1 - test_fraction - validation_fraction, method="higher"))
    return validation_start, test_start
