"""Baselines that need no training: popularity, first-order item transitions, item-kNN.

Each is a query tower whose "embedding" is a score per catalog item, paired with the
identity candidate tower (:class:`OneHotCandidateTower`, item j -> e_j), so ``query ·
candidateᵀ`` is the score vector itself and every reader of a model — the full-ranking
evaluator, ``tfsoft recommend``, the exporter — treats a baseline like any trained model.
The statistics come from the training split only (NumPy, computed once when the model is
built); they are constants, not weights, so a run's checkpoints stay tiny and the model is
rebuilt from the data exactly as it was evaluated.

With ``h_1 .. h_m`` the last ``m`` history items (h_1 the most recent) and ``pop`` the
training counts scaled to [0, 1]:

* popularity: ``s = pop`` (the same list for everyone);
* item transition: ``s = Σ_k λ^{k-1} P(· | h_k) + ε·pop``, ``P(b | a)`` = the share of a's
  training successors that are b (first-order Markov chain, as in FPMC's MC part, Rendle et
  al. WWW'10), recency-weighted by λ, with popularity filling in the items no transition reaches;
* item kNN: ``s = Σ_k λ^{k-1} S(h_k, ·) + ε·pop``, ``S`` the cosine similarity of items over
  their co-occurrence in training sequences (Sarwar et al. WWW'01; Linden et al. 2003),
  each item keeping its ``neighbors`` most similar items.

The catalog is scored densely ([B, V] per batch, a [V, V] table): meant for catalogs up to
some tens of thousands of items.
"""

from __future__ import annotations

import numpy as np

from tfsoft.backend import keras, tf
from tfsoft.data.ragged import Ragged

#: ε of the popularity fill-in: far below any transition probability or similarity of a
#: catalog up to 10^5 items, so it only orders the items the history gives no score.
FILL_IN = 1e-6


def item_popularity(train: Ragged, num_items: int) -> np.ndarray:
    """Training interactions per item index, [V] float64 (index 0 = OOV/padding: 0)."""
    counts = np.bincount(np.asarray(train.values, np.int64), minlength=num_items)[:num_items].astype(np.float64)
    counts[0] = 0.0
    return counts


def transition_probabilities(train: Ragged, num_items: int) -> np.ndarray:
    """``P[a, b]`` = (times b directly follows a in a training sequence) / (a's successors): [V, V] float32.

    Rows of items that are never followed (and row 0) are all zero.

    Example:
        >>> transition_probabilities(Ragged.from_rows([[1, 2, 1, 3]]), 4)[1].tolist()
        [0.0, 0.0, 0.5, 0.5]
    """
    values = np.asarray(train.values, np.int64)
    same_sequence = np.diff(train.row_ids()) == 0 if len(values) > 1 else np.zeros(0, bool)
    source, target = values[:-1][same_sequence], values[1:][same_sequence]
    counts = np.zeros((num_items, num_items), np.float64)
    np.add.at(counts, (source, target), 1.0)
    counts[0] = 0.0
    counts[:, 0] = 0.0
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).astype(np.float32)


def item_cosine(train: Ragged, num_items: int, neighbors: int | None = None, chunk: int = 2048) -> np.ndarray:
    """``S[i, j] = c_ij / sqrt(c_ii · c_jj)``, c_ij = training sequences holding both i and j;
    diagonal 0; each row keeps its ``neighbors`` largest entries (all with None). [V, V] float32.

    Example:
        >>> item_cosine(Ragged.from_rows([[1, 2], [1, 2, 3], [3]]), 4).round(3)[1].tolist()
        [0.0, 0.0, 1.0, 0.5]
    """
    co = np.zeros((num_items, num_items), np.float64)
    for start in range(0, len(train), chunk):
        rows = range(start, min(start + chunk, len(train)))
        present = np.zeros((len(rows), num_items), np.float32)
        for local, row in enumerate(rows):
            present[local, np.asarray(train[row], np.int64)] = 1.0
        co += present.T @ present
    co[0] = 0.0
    co[:, 0] = 0.0
    norm = np.sqrt(np.diag(co))
    similarity = np.divide(co, np.outer(norm, norm), out=np.zeros_like(co), where=np.outer(norm, norm) > 0)
    np.fill_diagonal(similarity, 0.0)
    if neighbors is not None and neighbors < num_items:
        cut = np.partition(similarity, num_items - neighbors, axis=1)[:, num_items - neighbors][:, None]
        similarity = np.where(similarity >= cut, similarity, 0.0)
    return similarity.astype(np.float32)


class ScoreTableTower(keras.layers.Layer):
    """Query tower of a baseline: a score per catalog item from the last ``history_items`` items.

    ``s = Σ_{k=1..m} decay^{k-1} · table[h_k] + fill · pop`` (module docstring); without a
    table, ``s = pop``. Padding (index 0) has an all-zero table row.

    Args:
        popularity: [V] training counts per item (scaled to [0, 1] here).
        table: [V, V] item -> item scores, or None (popularity).
        history_items: m, the most recent history items read.
        decay: λ, the weight of each step back.
        fill: ε, the weight of popularity.

    Example:
        >>> tower = ScoreTableTower(np.array([0.0, 2, 1]), np.eye(3, dtype=np.float32), 2, 0.5, 0.0)
        >>> tower({"history": tf.constant([[1, 2]])}).numpy().tolist()
        [[0.0, 0.5, 1.0]]
    """

    def __init__(self, popularity: np.ndarray, table: np.ndarray | None = None, history_items: int = 1,
                 decay: float = 1.0, fill: float = FILL_IN, **kwargs):
        super().__init__(trainable=False, **kwargs)
        popularity = np.asarray(popularity, np.float64)
        self.num_items = len(popularity)
        self._popularity = tf.constant(popularity / max(popularity.max(), 1.0), tf.float32)
        self._table = None if table is None else tf.constant(np.asarray(table, np.float32))
        self.history_items, self.decay, self.fill = int(history_items), float(decay), float(fill)

    def call(self, inputs, training=False):
        history = tf.cast(inputs["history"], tf.int64)
        batch = tf.shape(history)[0]
        popularity = tf.broadcast_to(self._popularity, tf.stack([batch, self.num_items]))
        if self._table is None:
            return popularity
        recent = history[:, -self.history_items:]  # [B, m], newest last
        width = tf.shape(recent)[1]
        steps_back = tf.cast(tf.range(width - 1, -1, -1), tf.float32)
        weights = tf.pow(tf.constant(self.decay, tf.float32), steps_back)  # newest: decay^0
        # Σ_k w_k · table[h_k] as (weighted multi-hot [B, V]) @ table: O(B·V) memory, not the
        # O(B·m·V) of gathering m table rows per query (long histories, e.g. m = 1000).
        rows = tf.repeat(tf.range(tf.cast(batch, tf.int64)), width)
        flat_index = rows * self.num_items + tf.reshape(recent, [-1])
        flat_weight = tf.tile(weights, [batch])
        weighted_history = tf.reshape(
            tf.math.unsorted_segment_sum(flat_weight, flat_index, tf.cast(batch, tf.int64) * self.num_items),
            tf.stack([batch, self.num_items]))
        scores = tf.matmul(weighted_history, self._table)
        return scores + self.fill * popularity


class OneHotCandidateTower(keras.layers.Layer):
    """Candidate tower of a baseline: item j -> the unit vector e_j of R^V, so a query's
    score vector dotted with the catalog is itself."""

    def __init__(self, num_items: int, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.num_items = int(num_items)

    def call(self, inputs, training=False):
        return tf.one_hot(tf.cast(inputs, tf.int64), self.num_items, dtype=tf.float32)
