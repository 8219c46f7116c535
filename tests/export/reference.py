"""Expected answers for exported and served models, computed without tfsoft's own code paths.

The reference is NumPy on raw ids and the run's saved tables — nothing from ``tfsoft`` is
imported — so a bug shared by the exporter and the training/serving code cannot hide:

* raw queries come from the data file itself (``lastfm_small.csv``: ``session_id`` = user,
  rows of a user in time order): a user's history is everything but their last interaction;
* ``item_vocabulary.json`` / ``user_vocabulary.json`` (``{"dtype", "tokens"}``, token ``i``
  has index ``i + 1``, index 0 = OOV) map raw ids to table rows;
* ``checkpoints/best.weights.h5`` is read with h5py: the candidate tower's item table, and the
  query tower's item table (history pooling) or user table (id tower);
* query (SSM paper §4.4.6 history pooling, α1 = ``history_exponent``):
  ``q = |H|^{-α1} Σ_{j∈H} e_j (+ e_u with the user embedding)`` over the last ``max_history``
  known items of the history; id tower: ``q = e_u``. With cosine scoring, ``q`` and every
  candidate are L2-normalised (``x / sqrt(max(|x|², 1e-12))``, as ``tf.math.l2_normalize``);
* scores ``q·cᵀ`` in float64, item 0 and excluded items at ``-inf``, ranked by a stable sort.

Towers NumPy cannot cheaply reproduce (SASRec, GRU, LightGCN, feature towers) are refused
with :class:`Unsupported`; their tests compare with the in-process Keras model instead.
:func:`same_ranking` is the comparison every test of a ranking uses.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]


class Unsupported(Exception):
    """The run's query tower is not one the NumPy reference reproduces."""


def data_file(name: str = "lastfm_small.csv") -> Path:
    """The shared data file (``$TFSOFT_DATA_DIR`` or ``../shared/data`` next to the repository)."""
    folders = [os.environ["TFSOFT_DATA_DIR"]] if os.environ.get("TFSOFT_DATA_DIR") else []
    folders += [str(ROOT.parent / "shared" / "data"), str(ROOT / "data")]
    for folder in folders:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise FileNotFoundError(f"{name} not found in {', '.join(folders)}")


@functools.lru_cache(maxsize=None)
def _read_sequences(path: Path) -> dict:
    sequences: dict = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            sequences.setdefault(int(row["session_id"]), []).append(int(row["item_id"]))
    return sequences


def user_sequences(path: Path | None = None) -> dict:
    """``{raw user id: [raw item ids, oldest first]}`` from ``session_id,item_id,...`` rows, in file order."""
    return {user: list(items) for user, items in _read_sequences(Path(path or data_file())).items()}


def real_queries(count=8, start=0):
    """Raw user ids and raw histories (oldest first: all but the user's last interaction) of
    ``count`` users of the data file, in file order from the ``start``-th."""
    sequences = list(user_sequences().items())[start:start + count]
    return [user for user, _ in sequences], [items[:-1] for _, items in sequences]


def same_ranking(got, want, scores, catalog=None, atol=1e-5) -> bool:
    """True when ``got`` is the reference ranking ``want`` up to the order of tied items.

    ``scores[i]`` is the reference score of ``want[i]`` (best first). Position ``i`` of ``got``
    must hold an item whose reference score equals ``scores[i]`` within ``atol``: items may
    swap only where the reference scores are (numerically) tied, and a wrong item at any
    position, the last one included, fails. ``catalog`` (raw id -> reference score, the whole
    catalog) also accepts an item outside ``want`` that ties with the last kept score; without
    it, every item of ``got`` must be in ``want``. ``got`` must not repeat items.
    """
    got, want, scores = list(got), list(want), [float(s) for s in scores]
    if len(got) != len(want) or len(set(got)) != len(got):
        return False
    score_of = dict(zip(want, scores)) if catalog is None else catalog
    return all(item in score_of and abs(float(score_of[item]) - expected) <= atol
               for item, expected in zip(got, scores))


def _ids(payload: dict) -> list:
    if payload.get("dtype") not in ("int64", "string"):
        raise ValueError(f"vocabulary dtype must be int64 or string; got {payload.get('dtype')!r}")
    return [int(t) for t in payload["tokens"]] if payload["dtype"] == "int64" else [str(t) for t in payload["tokens"]]


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.maximum((x * x).sum(axis=-1, keepdims=True), 1e-12))


def _weights(path: Path) -> dict:
    """Every 2-D array of an HDF5 weights file, by its path in the file."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, node: arrays.__setitem__(name, node[()])
                          if isinstance(node, h5py.Dataset) and node.ndim == 2 else None)
    return arrays


def _model_settings(config: dict) -> dict:
    """The query tower's name and keys, from either config layout (``query_tower: name`` with the
    keys in ``model``, or ``query_tower: {name: ..., keys}``)."""
    model = config.get("model", {})
    tower = model.get("query_tower", "history_pooling")
    settings = dict(model)
    if isinstance(tower, dict):
        settings.update(tower)
        tower = tower["name"]
    settings["tower"] = tower
    return settings


@dataclass
class NumpyReference:
    """A run's query and candidate embeddings rebuilt in NumPy (module docstring)."""

    run_dir: Path
    tower: str
    max_history: int
    cosine: bool
    history_exponent: float
    user_exponent: float
    item_tokens: list
    user_tokens: list
    candidates: np.ndarray            # [V, d], normalised when cosine
    history_table: np.ndarray | None  # [V, d] query tower's item table (history pooling)
    user_table: np.ndarray | None     # [U, d]

    @classmethod
    def load(cls, run_dir) -> "NumpyReference":
        run_dir = Path(run_dir)
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        settings = _model_settings(config)
        items = _ids(json.loads((run_dir / "item_vocabulary.json").read_text(encoding="utf-8")))
        users = _ids(json.loads((run_dir / "user_vocabulary.json").read_text(encoding="utf-8")))
        tower, candidate_tower = settings["tower"], settings.get("candidate_tower") or "id"
        candidate_tower = candidate_tower["name"] if isinstance(candidate_tower, dict) else candidate_tower
        if tower not in ("history_pooling", "id") or candidate_tower != "id":
            raise Unsupported(f"the NumPy reference reproduces history_pooling and id query towers with an id "
                              f"candidate tower; the run has {tower!r} / {candidate_tower!r}")
        arrays = _weights(run_dir / "checkpoints" / "best.weights.h5")
        num_items, num_users = len(items) + 1, len(users) + 1
        query = {name: a for name, a in arrays.items() if name.startswith("query_tower/")}
        other = {name: a for name, a in arrays.items() if not name.startswith("query_tower/")}
        candidate = [a for a in other.values() if a.shape[0] == num_items]
        if len(candidate) != 1:
            raise Unsupported(f"expected one [{num_items}, d] candidate table outside query_tower/ in the "
                              f"checkpoint; found {[(n, a.shape) for n, a in other.items()]}")
        history = [a for n, a in query.items() if "item" in n and a.shape[0] == num_items]
        user = [a for n, a in query.items() if a.shape[0] == num_users and a.shape[1] == candidate[0].shape[1]]
        if len(query) != len(history) + len(user):  # e.g. an MLP after the id embedding
            raise Unsupported(f"the query tower holds weights the reference does not model: "
                              f"{[(n, a.shape) for n, a in query.items()]}")
        if tower == "id" and len(user) != 1:
            raise Unsupported(f"no [{num_users}, d] user table under query_tower/: {list(query)}")
        if tower == "history_pooling" and settings.get("tie_item_embeddings"):
            history = candidate
        similarity = settings.get("score_similarity") or settings.get("similarity", "cosine")
        candidates = candidate[0].astype(np.float64)
        return cls(run_dir=run_dir, tower=tower, max_history=int(config["data"]["max_history"]),
                   cosine=similarity == "cosine", history_exponent=float(settings.get("history_exponent", 1.0)),
                   user_exponent=float(settings.get("user_exponent", 0.0) or 0.0), item_tokens=items,
                   user_tokens=users, candidates=_l2_normalize(candidates) if similarity == "cosine" else candidates,
                   history_table=history[0].astype(np.float64) if history else None,
                   user_table=user[0].astype(np.float64) if user else None)

    # ------------------------------------------------------------------ raw ids
    def item_index(self, raw_ids) -> np.ndarray:
        """Raw item ids -> indices (unknown -> 0)."""
        if not hasattr(self, "_items"):
            self._items = {token: i + 1 for i, token in enumerate(self.item_tokens)}
        return np.array([self._items.get(raw, 0) for raw in raw_ids], np.int64)

    def user_index(self, raw_ids) -> np.ndarray:
        """Raw user ids -> indices (unknown -> 0)."""
        if not hasattr(self, "_users"):
            self._users = {token: i + 1 for i, token in enumerate(self.user_tokens)}
        return np.array([self._users.get(raw, 0) for raw in raw_ids], np.int64)

    def queries(self, count=8, start=0):
        """:func:`real_queries` (the data file is the run's data file: ``lastfm_small``)."""
        return real_queries(count, start)

    # ------------------------------------------------------------------ maths
    def query_vectors(self, users, histories) -> np.ndarray:
        """[B, d] query embeddings in the scoring space (module docstring)."""
        rows = []
        for user, history in zip(users, histories):
            if self.tower == "id":
                rows.append(self.user_table[self.user_index([user])[0]])
                continue
            known = self.item_index(history)
            known = known[known > 0][-self.max_history:]
            count = len(known)
            pooled = self.history_table[known].sum(axis=0) / (count ** self.history_exponent if count else 1.0)
            if self.user_table is not None:
                pooled = pooled + self.user_table[self.user_index([user])[0]] / max(count, 1) ** self.user_exponent
            rows.append(pooled)
        query = np.stack(rows)
        return _l2_normalize(query) if self.cosine else query

    def scores(self, users, histories, exclude=None) -> np.ndarray:
        """[B, V] reference scores; item 0 and each row's excluded raw ids at ``-inf``."""
        scores = self.query_vectors(users, histories) @ self.candidates.T
        scores[:, 0] = -np.inf
        for row, items in enumerate([] if exclude is None else exclude):
            scores[row, self.item_index(items)] = -np.inf
            scores[row, 0] = -np.inf
        return scores

    def top_k(self, users, histories, k, exclude=None):
        """Exact top-``k`` raw item ids per query (best first) and their [B, k] scores."""
        scores = self.scores(users, histories, exclude)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return ([[self.item_tokens[i - 1] for i in row] for row in top],
                np.take_along_axis(scores, top, axis=1))

    def catalog(self, users, histories, exclude=None) -> list:
        """Per query, ``{raw item id: reference score}`` over the allowed catalog (for :func:`same_ranking`)."""
        return [{token: float(s) for token, s in zip(self.item_tokens, row[1:]) if np.isfinite(s)}
                for row in self.scores(users, histories, exclude)]
