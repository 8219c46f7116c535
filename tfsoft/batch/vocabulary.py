"""Which users an exported model knows, and its most popular items, from the version's id files.

``assets/user_ids.txt`` and ``assets/item_ids.txt`` hold one raw id per line (line ``i`` =
index ``i``; :func:`tfsoft.export.servable.write_id_file`), items in descending training
frequency (:mod:`tfsoft.data.vocabulary`), so the first lines are the most popular items.

A user is **unknown** when nothing the query tower reads is in the vocabularies: the user id
is not in ``user_ids.txt`` (for a tower reading ``user_id``) and no history item is in
``item_ids.txt`` (for a tower reading ``history``). The model would answer such a user from its
OOV vector; ``--unknown-users popular`` answers with the most popular items instead (scores
null, ``source = "popular"``), ``skip`` leaves them out. Both count them in the manifest.

Membership is a binary search in the sorted id array (``np.searchsorted``): O(log V) per id,
no Python set of millions of ids.

Example:
    >>> vocab = ExportVocabulary.load(version_dir, "int64", "int64")   # doctest: +SKIP
    >>> vocab.known_users(np.array([1, 999_999])).tolist()             # doctest: +SKIP
    [True, False]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfsoft.errors import ExportError


def read_ids(path: str | Path, dtype: str) -> np.ndarray:
    """The ids of an id file, in file order: int64 or object (str) array."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"the export has no id file '{path}'")
    lines = path.read_text(encoding="utf-8").splitlines()
    if dtype == "int64":
        try:
            return np.asarray([int(line) for line in lines], dtype=np.int64)
        except ValueError as error:
            raise ExportError(f"'{path}' holds a line that is not an int64 id ({error})") from None
    return np.asarray(lines, dtype=object)


def is_member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """[N] bool: whether each value is in ``sorted_ids`` (ascending, same kind of dtype)."""
    values = np.asarray(values)
    if len(sorted_ids) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    position = np.searchsorted(sorted_ids, values)
    position = np.minimum(position, len(sorted_ids) - 1)
    return sorted_ids[position] == values


class ExportVocabulary:
    """The raw ids of an exported version (module docstring)."""

    def __init__(self, user_ids: np.ndarray, item_ids: np.ndarray):
        self.user_ids, self.item_ids = user_ids, item_ids
        self._users = np.sort(user_ids)
        self._items = np.sort(item_ids)

    @classmethod
    def load(cls, version_dir: str | Path, user_dtype: str, item_dtype: str) -> "ExportVocabulary":
        assets = Path(version_dir) / "assets"
        users = read_ids(assets / "user_ids.txt", user_dtype) if (assets / "user_ids.txt").is_file() else \
            np.empty(0, np.int64 if user_dtype == "int64" else object)
        return cls(users, read_ids(assets / "item_ids.txt", item_dtype))

    def known_users(self, users: np.ndarray) -> np.ndarray:
        """[N] bool: the user id is in the user vocabulary."""
        return is_member(users, self._users)

    def known_histories(self, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """[N] bool: row i's history (``values[offsets[i]:offsets[i + 1]]``) holds a known item."""
        running = np.concatenate([[0], np.cumsum(is_member(values, self._items), dtype=np.int64)])
        return running[offsets[1:]] > running[offsets[:-1]]

    def popular(self, k: int, exclude=()) -> list:
        """The ``k`` most popular items (vocabulary order), leaving out ``exclude``."""
        if not len(exclude):
            return self.item_ids[:k].tolist()
        banned = set(np.asarray(exclude).tolist())
        out = []
        for item in self.item_ids[: k + len(banned)].tolist():
            if item not in banned:
                out.append(item)
                if len(out) == k:
                    break
        return out
