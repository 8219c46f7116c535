"""DeSoRec's soft targets (Zhang et al., poster part B): label propagation over training examples.

**Offline**, once per training run (:func:`desorec_target`, called when the objective is built):

1. *Nodes.* Every training example is a node; under per-position training
   (``data.example_mode: user|window``) every (prefix, target) position is one. The authors'
   code has one node per user (their training row); the issue asks for one per example.
2. *Embeddings.* The base run (``soft_target.teacher_runs: [BASE_RUN]``, trained with plain
   CE) is loaded frozen in the student's example layout (:func:`tfsoft.teachers.teacher.load_teacher`)
   and its query tower embeds every node. We use the query **in logit units**, ``q / τ``
   (``q`` prepared for the base's training similarity, normalised under cosine; ``τ`` the base
   loss's temperature): the authors embed with GRU4Rec's raw hidden state, whose dot product
   with the output layer *is* the logit; a normalised query alone would put every distance in
   [0, 2], where β = 1–2 makes W almost uniform.
3. *Graph.* W is row-stochastic, ``W_ij = softmax_j(−‖e_i − e_j‖/β)`` over i's neighbours,
   self excluded (:func:`tfsoft.losses.soft_targets.propagation_weights`):

   * ``cluster`` (the authors' code): K-means (Lloyd, seeded from ``train.seed``, at most 100
     rounds, random distinct nodes as initial centres, as their ``K_means.py``) into
     ``num_clusters`` groups; W dense inside each cluster, q over the cluster's own targets.
     Cost per cluster: n_c² memory and 20·n_c²·t_c flops (t_c distinct targets).
   * ``knn``: every node's ``num_neighbours`` nearest nodes, exact, from
     :func:`tfsoft.topk.exact_top_k` on augmented vectors (``[e, 1]·[e', −‖e'‖²/2]`` ranks by
     Euclidean distance); sparse propagation (:func:`propagate_sparse`) keeping each node's
     :data:`WIDTH_FACTOR`·``top_m`` largest entries between iterations (exact while a node's
     support fits in that width; otherwise the dropped tail is the smallest mass).
   * ``auto``: ``cluster`` up to :data:`AUTO_CLUSTER_MAX_NODES` nodes, ``knn`` above. Measured
     on this project's 2-core CPU machine while another benchmark ran (float32, d = 64, 20
     iterations; ``/tmp`` scripts, not kept): one cluster of 500 / 1,000 / 2,000 / 3,000 / 4,500 /
     6,000 nodes (t_c ≈ 0.43·n_c distinct targets) takes 0.1 / 0.1 / 0.7 / 4 / 12.5 / 29 s, so 16
     balanced clusters cost ≈ 2 s at 16,000 nodes, ≈ 12 s at 32,000, ≈ 64 s at 48,000
     (lastfm_small's per-position nodes) and ≈ 8 min at 96,000 (cubic: n_c²·t_c), each cluster's
     W holding n_c² floats. ``knn`` (k = 20, width 64) on 48,000 nodes: 12 s exact search + 28 s
     propagation (quadratic search, linear propagation). On lastfm_small itself (48,307
     per-position nodes, a SASRec base): ``cluster`` 91 s in all (K-means 9 s; the largest of
     16 clusters held 5,583 nodes), ``knn`` 39 s. The crossover lies between 32,000 and 48,000
     nodes; K-means clusters are rarely balanced and the largest dominates, so ``auto``
     switches at 30,000 nodes, and also takes ``knn`` when a cluster exceeds
     :data:`AUTO_MAX_CLUSTER_NODES`. With ``graph: cluster`` a cluster over
     :data:`MAX_CLUSTER_NODES` nodes is an error suggesting ``knn``.
4. *Propagation.* ``q⁰`` one-hot on the node's target; ``q^{t+1} = α·W·q^t + (1 − α)·q⁰``
   (α = ``propagation_alpha``), ``iterations`` times.
5. *Storage.* Each node keeps the ``top_m`` largest entries of its q (scaled to total mass 1:
   a node without neighbours, q = (1 − α)·q⁰, becomes one-hot, as the authors' self-loop),
   item ids ascending: O(n·m), never n × items. They are **not** renormalised after the cut
   (unlike :func:`tfsoft.losses.soft_targets.top_targets`): q_y keeps its propagated value,
   where renormalising would inflate it by the tail's mass (lastfm_small, SASRec base after 30
   steps, m = 32: mean q_y 0.50 stored, 0.92 renormalised on the cluster graph, whose
   non-target mass spreads over hundreds of items; 0.51 and 0.60 on the knn graph); the
   non-target part is renormalised over the candidates at each step anyway.

**Node keys** (how a step finds its examples' targets). A node is keyed by a 64-bit fingerprint
of (user, the prefix its query reads — right-aligned and left-padded to ``max_history`` —,
target), computed by :func:`node_keys` from the batch's own ``user``, ``history`` and
``target`` features, offline and in the step by the same function. Examples that are equal in
all three are one node (they are the same node of the graph: same embedding, same target).
We chose this over a new "example index" column in the training pipeline because it changes
nothing in ``tfsoft/data``, ``training`` or the model, and holds for any batch of training
examples, whatever the shuffling or the strategy. A batch row whose key is unknown (e.g. a
validation batch) falls back to ``q = onehot(y)``: loss ``λ2·CE``.

**At every step** (:class:`DesorecTarget`): the rows' stored targets are looked up
(``tf.searchsorted``, no hash table) and mapped onto the student's candidates. The target
item's probability ``q_y`` comes from the stored row, **not** from the restriction to C (on
sampled or in-batch candidates the restriction would renormalise it towards 1); the non-target
part ``q̂`` is restricted to C's other kept candidates with the student's logQ correction
(:func:`tfsoft.losses.soft_target_objective.restrict`), its self-normalised estimate. **When C
holds none of q̂'s support** that estimate is undefined and the KL term is dropped for that
row: its loss is ``λ2·BCE(q_b, p_b)`` with the exact ``q_y``. (Adding the support to C would
put items that were not drawn from the proposal among the logQ-corrected samples and embed m
more items per example; on the full catalog C always holds the support.)

Nothing of this is in the student's checkpoints: evaluation and export build no source.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses import logits as steps
from tfsoft.losses.soft_target_objective import restrict
from tfsoft.losses.soft_targets import label_propagation, propagation_weights

GRAPHS = ("auto", "cluster", "knn")
#: ``graph: auto`` builds K-means clusters up to this many nodes, a k-NN graph above (module docstring).
AUTO_CLUSTER_MAX_NODES = 30_000
#: ... unless K-means makes a cluster larger than this (≈ 8 s of propagation each): then ``knn``
AUTO_MAX_CLUSTER_NODES = 4_000
#: a cluster larger than this would need a dense W over 1.6 GB (float32): an error, use ``graph: knn``
MAX_CLUSTER_NODES = 20_000
#: knn propagation keeps ``WIDTH_FACTOR · top_m`` entries per node between iterations
WIDTH_FACTOR = 2
_ROWS_PER_CHUNK = 2048
_DENSE_FACTOR = 4

_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ node keys
def _fingerprint(rows: tf.Tensor) -> tf.Tensor:
    """[N, k] int64 -> [N] int64 (FarmHash fingerprint of each row's bytes)."""
    return tf.bitcast(tf.fingerprint(rows), tf.int64)


def node_keys(features: dict) -> tf.Tensor:
    """[N] int64 keys of a batch's examples, in the order :meth:`tfsoft.model.TwoTowerModel.encode`
    keeps them: one per row for targets [B]; one per non-padding position, row-major, for
    per-position targets [B, L] (position p reads ``history[:, :p + 1]``).

    The key fingerprints (user, prefix right-aligned and left-padded to L, target), so a position
    of a sequence row and the position-mode example with the same user, history and target have
    the same key. ``user`` is optional (0 when absent).
    """
    target = tf.cast(features["target"], tf.int64)
    history = tf.cast(features["history"], tf.int64)
    batch = tf.shape(target)[0]
    user = tf.cast(features["user"], tf.int64) if "user" in features else tf.zeros([batch], tf.int64)
    if target.shape.rank != 2:
        return _fingerprint(tf.concat([user[:, tf.newaxis], history, target[:, tf.newaxis]], axis=1))
    length = tf.shape(history)[1]
    positions = tf.range(length)
    # row p (a position), column c: history[c − (L − 1 − p)], zero where that is before the row
    source = positions[tf.newaxis, :] - (length - 1 - positions[:, tf.newaxis])
    prefix = tf.gather(history, tf.maximum(source, 0), axis=1)  # [B, L, L]
    prefix = tf.where((source >= 0)[tf.newaxis], prefix, tf.zeros_like(prefix))
    users = tf.broadcast_to(user[:, tf.newaxis, tf.newaxis], tf.stack([batch, length, 1]))
    rows = tf.concat([users, prefix, target[:, :, tf.newaxis]], axis=-1)
    keys = _fingerprint(tf.reshape(rows, tf.stack([-1, length + 2])))
    return tf.boolean_mask(keys, tf.reshape(tf.not_equal(target, 0), [-1]))


def embed_nodes(model, features: dict, batch_size: int = 1024):
    """(keys [n], embeddings [n, d] in logit units, targets [n]) of every training example,
    embedded by ``model``'s query tower (module docstring, step 2)."""
    tau = float(getattr(model.retrieval_loss, "temperature", 1.0))

    @tf.function(reduce_retracing=True)
    def embed(batch):
        encoded = model.encode(batch, training=False)
        return node_keys(batch), encoded.query / tau, encoded.target

    keys, embeddings, targets = [], [], []
    total = len(features["target"])
    for start in range(0, total, batch_size):
        batch = {name: tf.constant(values[start:start + batch_size]) for name, values in features.items()}
        key, embedding, target = embed(batch)
        keys.append(key.numpy())
        embeddings.append(embedding.numpy())
        targets.append(target.numpy())
    return np.concatenate(keys), np.concatenate(embeddings), np.concatenate(targets).astype(np.int64)


# ----------------------------------------------------------------------------------- the graph
def choose_graph(graph: str, num_nodes: int) -> str:
    """``cluster`` or ``knn``: ``graph`` itself, or for ``auto`` the rule of :data:`AUTO_CLUSTER_MAX_NODES`
    (:func:`build_node_targets` then still takes ``knn`` if a cluster exceeds :data:`AUTO_MAX_CLUSTER_NODES`)."""
    if graph not in GRAPHS:
        raise ConfigError(f"soft_target.graph must be one of {', '.join(GRAPHS)}; got {graph!r}")
    if graph != "auto":
        return graph
    return "cluster" if num_nodes <= AUTO_CLUSTER_MAX_NODES else "knn"


def _nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    squared = (centres * centres).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), 8 * _ROWS_PER_CHUNK):
        rows = x[start:start + 8 * _ROWS_PER_CHUNK]
        out[start:start + len(rows)] = np.argmin(squared[np.newaxis] - 2 * rows @ centres.T, axis=1)
    return out


def kmeans(x: np.ndarray, num_clusters: int, seed: int = 0, max_rounds: int = 100) -> np.ndarray:
    """[n] cluster of each row of ``x`` (Lloyd's K-means, Euclidean; module docstring)."""
    x = np.asarray(x)
    n = len(x)
    k = min(int(num_clusters), n)
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(n, size=k, replace=False)].astype(np.float64)
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_rounds):
        new = _nearest_centre(x, centres)
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
        filled = counts > 0  # an empty cluster keeps its centre
        centres[filled] = sums[filled] / counts[filled, np.newaxis]
    return labels


def knn_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """[n, min(k, n − 1)] each node's nearest other nodes by Euclidean distance, nearest first
    (exact, :func:`tfsoft.topk.exact_top_k` over ``[e, 1]·[e', −‖e'‖²/2]``, self excluded)."""
    from tfsoft.topk import exact_top_k

    x = np.asarray(x)
    n = len(x)
    k = min(int(k), n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    squared = (x * x).sum(axis=1)
    catalog = tf.constant(np.concatenate([np.zeros((1, x.shape[1] + 1), x.dtype),  # row 0: never returned
                                          np.c_[x, -0.5 * squared]]))
    queries = np.c_[x, np.ones(n, x.dtype)]
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, _ROWS_PER_CHUNK // 2):
        rows = np.arange(start, min(n, start + _ROWS_PER_CHUNK // 2))
        indices, _ = exact_top_k(tf.constant(queries[rows]), catalog, k, exclude=tf.constant((rows + 1)[:, None]))
        out[rows] = indices.numpy() - 1
    return out


def knn_weights(x: np.ndarray, neighbours: np.ndarray, beta: float) -> np.ndarray:
    """[n, k] ``softmax_k(−‖e_i − e_{n_ik}‖/β)`` (entries with a neighbour < 0 get 0)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(neighbours.shape, dtype=np.float64)
    if neighbours.shape[1] == 0:
        return out
    for start in range(0, len(x), _ROWS_PER_CHUNK):
        nb = neighbours[start:start + _ROWS_PER_CHUNK]
        valid = nb >= 0
        distance = np.linalg.norm(x[start:start + len(nb), np.newaxis] - x[np.maximum(nb, 0)], axis=-1)
        logits = np.where(valid, -distance / beta, -np.inf)
        top = np.max(logits, axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        weights = np.where(valid, np.exp(logits - top), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        out[start:start + len(nb)] = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return out


# -------------------------------------------------------------------------------- propagation
def _combine(ids: np.ndarray, probs: np.ndarray, width: int, num_items: int):
    """Per row: sum the probabilities of equal ids, keep the ``width`` largest (ids −1 = empty).

    Ids are summed in a dense [rows, num_items] accumulator when the catalog is at most
    :data:`_DENSE_FACTOR` times the row's entries (one ``bincount``, about 5× faster than sorting
    on lastfm_small), else by sorting each row's ids.
    """
    rows, entries = ids.shape
    valid = ids >= 0
    if num_items <= _DENSE_FACTOR * entries:
        flat = (np.where(valid, ids, 0) + num_items * np.arange(rows)[:, np.newaxis]).ravel()
        sums = np.bincount(flat, weights=np.where(valid, probs, 0.0).ravel(), minlength=rows * num_items)
        sums = sums.reshape(rows, num_items)
        unique = np.broadcast_to(np.arange(num_items, dtype=np.int64), (rows, num_items))
    else:
        order = np.argsort(ids, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        probs = np.take_along_axis(np.where(valid, probs, 0.0), order, axis=1)
        starts = np.ones_like(ids, dtype=bool)
        starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
        segment = np.cumsum(starts, axis=1) - 1
        flat = (segment + entries * np.arange(rows)[:, np.newaxis]).ravel()
        sums = np.bincount(flat, weights=probs.ravel(), minlength=rows * entries).reshape(rows, entries)
        unique = np.full((rows, entries), -1, dtype=np.int64)
        unique[np.repeat(np.arange(rows), entries), segment.ravel()] = ids.ravel()
    if unique.shape[1] > width:
        keep = np.argpartition(-sums, width - 1, axis=1)[:, :width]
        unique, sums = np.take_along_axis(unique, keep, axis=1), np.take_along_axis(sums, keep, axis=1)
    elif unique.shape[1] < width:
        extra = width - unique.shape[1]
        unique = np.pad(unique, ((0, 0), (0, extra)), constant_values=-1)
        sums = np.pad(sums, ((0, 0), (0, extra)))
    return np.where(sums > 0, unique, -1), np.where(sums > 0, sums, 0.0)


def propagate_sparse(neighbours: np.ndarray, weights: np.ndarray, targets: np.ndarray, alpha: float,
                     iterations: int, width: int):
    """``q^{t+1} = α·W·q^t + (1 − α)·onehot(targets)`` with W given as [n, k] (neighbours, weights)
    and every q^t kept as its ``width`` largest (item, probability) pairs per node.

    Each row is divided by its exact total mass, propagated alongside (1 where W's rows sum to 1;
    a node without neighbours, q = (1 − α)·q⁰, becomes one-hot, as the authors' self-loop), so
    the mass a truncation drops is not spread over what is kept.

    Returns:
        ([n, width] item ids, −1 where empty; [n, width] float64 probabilities). Exact while no
        node's support exceeds ``width``.
    """
    n = len(targets)
    num_items = int(targets.max()) + 1 if n else 1
    ids = np.full((n, width), -1, dtype=np.int64)
    probs = np.zeros((n, width), dtype=np.float64)
    ids[:, 0], probs[:, 0] = targets, 1.0
    valid = neighbours >= 0
    mass = np.ones(n)
    row_weights = np.where(valid, weights, 0.0)
    for _ in range(iterations):
        mass = alpha * (row_weights * mass[np.maximum(neighbours, 0)]).sum(axis=1) + (1 - alpha)
        new_ids, new_probs = np.empty_like(ids), np.empty_like(probs)
        for start in range(0, n, _ROWS_PER_CHUNK):
            nb = np.maximum(neighbours[start:start + _ROWS_PER_CHUNK], 0)
            rows = len(nb)
            scale = alpha * np.where(valid[start:start + rows], weights[start:start + rows], 0.0)
            gathered_ids = np.where(scale[:, :, np.newaxis] > 0, ids[nb], -1).reshape(rows, -1)
            gathered = (probs[nb] * scale[:, :, np.newaxis]).reshape(rows, -1)
            gathered_ids = np.concatenate([gathered_ids, targets[start:start + rows, np.newaxis]], axis=1)
            gathered = np.concatenate([gathered, np.full((rows, 1), 1.0 - alpha)], axis=1)
            new_ids[start:start + rows], new_probs[start:start + rows] = _combine(gathered_ids, gathered, width,
                                                                                  num_items)
        ids, probs = new_ids, new_probs
    return ids, probs / mass[:, np.newaxis]


def _top(ids: np.ndarray, probs: np.ndarray, top_m: int):
    """Each row's ``top_m`` largest entries, **not** renormalised after the cut: q_y keeps its
    propagated value. Item ids ascending; empty slots hold id 0 with probability 0."""
    if ids.shape[1] > top_m:
        keep = np.argpartition(-probs, top_m - 1, axis=1)[:, :top_m]
        ids, probs = np.take_along_axis(ids, keep, axis=1), np.take_along_axis(probs, keep, axis=1)
    elif ids.shape[1] < top_m:
        ids = np.pad(ids, ((0, 0), (0, top_m - ids.shape[1])), constant_values=-1)
        probs = np.pad(probs, ((0, 0), (0, top_m - probs.shape[1])))
    ids = np.where(probs > 0, ids, 0)
    order = np.argsort(ids, axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(probs, order, axis=1)


def cluster_targets(x: np.ndarray, targets: np.ndarray, clusters: np.ndarray, *, beta: float, alpha: float,
                    iterations: int, top_m: int):
    """The ``cluster`` graph's propagation: dense W and q inside each cluster (the authors'
    ``graph.py``; q over the cluster's own targets). Returns ([n, top_m] ids, [n, top_m] probs)
    as :func:`_top`."""
    n = len(targets)
    ids = np.zeros((n, top_m), dtype=np.int64)
    probs = np.zeros((n, top_m), dtype=np.float64)
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        if len(members) > MAX_CLUSTER_NODES:
            raise ConfigError(f"soft_target.graph 'cluster': a K-means cluster holds {len(members)} nodes (over "
                              f"{MAX_CLUSTER_NODES}, a dense W of {len(members) ** 2 * 4 / 2 ** 30:.1f} GiB); "
                              f"use soft_target.graph=knn or more soft_target.num_clusters")
        items, local = np.unique(targets[members], return_inverse=True)
        initial = np.zeros((len(members), len(items)), dtype=x.dtype)
        initial[np.arange(len(members)), local] = 1.0
        w = propagation_weights(tf.constant(x[members]), beta)
        q = label_propagation(w, tf.constant(initial), alpha=alpha, iterations=iterations).numpy()
        q /= q.sum(axis=1, keepdims=True)  # a node alone in its cluster: (1 − α)·q⁰ -> one-hot (their self-loop)
        ids[members], probs[members] = _top(np.broadcast_to(items, q.shape), q, top_m)
    return ids, probs


@dataclass(frozen=True)
class NodeTargets:
    """Propagated targets of the training nodes, sorted by key.

    Attributes:
        keys: [n] int64 node keys (:func:`node_keys`), ascending, unique.
        item_ids: [n, m] int64 item ids, ascending per row (0 with probability 0 = empty).
        probs: [n, m] float32, the m largest entries of q (rows sum to at most 1).
        graph: ``cluster`` or ``knn``, the graph used.
    """

    keys: np.ndarray
    item_ids: np.ndarray
    probs: np.ndarray
    graph: str

    def dense(self, num_items: int) -> np.ndarray:
        """[n, num_items] the targets as dense rows (for tests and inspection; small data only)."""
        out = np.zeros((len(self.keys), num_items))
        np.add.at(out, (np.repeat(np.arange(len(self.keys)), self.item_ids.shape[1]), self.item_ids.ravel()),
                  self.probs.ravel())
        return out


def build_node_targets(keys: np.ndarray, embeddings: np.ndarray, targets: np.ndarray, *, graph: str = "auto",
                       beta: float = 2.0, alpha: float = 0.5, iterations: int = 20, num_clusters: int = 16,
                       num_neighbours: int = 20, top_m: int = 32, seed: int = 0) -> NodeTargets:
    """Steps 3–5 of the module docstring on embedded nodes. Equal keys are one node (the first)."""
    keys = np.asarray(keys, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    order = order[first]
    keys, x, targets = keys[order], np.asarray(embeddings)[order], np.asarray(targets, dtype=np.int64)[order]
    chosen = choose_graph(graph, len(keys))
    if chosen == "cluster":
        clusters = kmeans(x, num_clusters, seed=seed)
        largest = int(np.bincount(clusters).max())
        if graph == "auto" and largest > AUTO_MAX_CLUSTER_NODES:
            _log.info("desorec: a K-means cluster holds %d nodes (over %d): graph knn", largest,
                      AUTO_MAX_CLUSTER_NODES)
            chosen = "knn"
    if chosen == "cluster":
        ids, probs = cluster_targets(x, targets, clusters, beta=beta, alpha=alpha, iterations=iterations,
                                     top_m=top_m)
    else:
        neighbours = knn_neighbours(x, num_neighbours)
        weights = knn_weights(x, neighbours, beta)
        ids, probs = propagate_sparse(neighbours, weights, targets, alpha, iterations, WIDTH_FACTOR * top_m)
        ids, probs = _top(ids, probs, top_m)
    return NodeTargets(keys, ids.astype(np.int64), probs.astype(np.float32), chosen)


# ------------------------------------------------------------------------------- the runtime
@dataclass(frozen=True)
class DesorecTarget:
    """The stored node targets as a soft-target source (module docstring, "At every step").

    :meth:`parts` gives what :class:`tfsoft.losses.decoupled_objective.DecoupledSoftTargetLoss`
    needs; :meth:`target` the whole target as a distribution over the candidates (the
    :class:`tfsoft.losses.soft_target_objective.TargetSource` protocol).
    """

    keys: tf.Tensor
    item_ids: tf.Tensor
    probs: tf.Tensor
    onehot_weight: float = 0.0

    @classmethod
    def from_nodes(cls, nodes: NodeTargets) -> "DesorecTarget":
        return cls(tf.constant(nodes.keys, tf.int64), tf.constant(nodes.item_ids, tf.int64),
                   tf.constant(nodes.probs, tf.float32))

    def lookup(self, features: dict):
        """([N, m] item ids, [N, m] probabilities, [N] bool found) of the batch's examples; rows
        not found have probabilities 0."""
        keys = node_keys(features)
        last = tf.maximum(tf.shape(self.keys)[0] - 1, 0)
        position = tf.minimum(tf.searchsorted(self.keys, keys), last)
        found = tf.equal(tf.gather(self.keys, position), keys)
        probs = tf.gather(self.probs, position) * tf.cast(found, tf.float32)[:, tf.newaxis]
        return tf.gather(self.item_ids, position), probs, found

    def parts(self, scored, context):
        """(q_y [N], q̂_C [N, M]): the target item's stored probability (1 for an unknown row), and
        the non-target part restricted to the other kept candidates (all zeros when C holds none
        of its support)."""
        ids, probs, found = self.lookup(context.features)
        dtype = scored.logits.dtype
        probs = tf.cast(probs, dtype)
        candidates = tf.cast(tf.broadcast_to(scored.candidate_ids, tf.shape(scored.logits)), tf.int64)
        positive = steps.at_positive(candidates, scored.positive_index)
        q_y = tf.reduce_sum(probs * tf.cast(tf.equal(ids, positive[:, tf.newaxis]), dtype), axis=-1)
        q_y = tf.where(found, q_y, tf.ones_like(q_y))
        column = tf.minimum(tf.searchsorted(ids, candidates), tf.shape(ids)[1] - 1)
        hit = tf.equal(tf.gather(ids, column, batch_dims=1), candidates)
        at_candidates = tf.where(hit, tf.gather(probs, column, batch_dims=1), tf.zeros_like(scored.logits))
        at_candidates = tf.where(tf.equal(candidates, positive[:, tf.newaxis]), tf.zeros_like(at_candidates),
                                 at_candidates)
        rest = restrict(tf.math.log(at_candidates), scored)
        return tf.stop_gradient(q_y), tf.stop_gradient(rest)

    def target(self, scored, context):
        """[N, M] ``q_y·onehot_y + (1 − q_y)·q̂_C``; rows whose q̂_C is empty put all mass on y."""
        q_y, rest = self.parts(scored, context)
        onehot = tf.one_hot(tf.cast(scored.positive_index, tf.int32), tf.shape(rest)[-1], dtype=rest.dtype)
        supported = tf.reduce_sum(rest, axis=-1, keepdims=True) > 0
        q_y = tf.where(supported, q_y[:, tf.newaxis], tf.ones_like(q_y)[:, tf.newaxis])
        return q_y * onehot + (1 - q_y) * rest


def desorec_target(section, config, prepared) -> DesorecTarget:
    """The offline step (module docstring) for a student's ``config`` and data, from its
    ``soft_target`` section (:class:`tfsoft.teachers.sections.DesorecSection`)."""
    from tfsoft.teachers.teacher import load_teacher
    from tfsoft.training import training_examples

    if config is None or prepared is None:
        raise ValueError("a desorec source is built with the student's config and data")
    started = time.perf_counter()
    model = load_teacher(section.teacher_runs[0], student_config=config, student_prepared=prepared,
                         checkpoint=section.checkpoint)
    keys, embeddings, targets = embed_nodes(model, training_examples(config, prepared))
    del model
    nodes = build_node_targets(keys, embeddings, targets, graph=section.graph, beta=section.beta,
                               alpha=section.propagation_alpha, iterations=section.iterations,
                               num_clusters=section.num_clusters, num_neighbours=section.num_neighbours,
                               top_m=section.top_m, seed=config.train.seed or 0)
    _log.info("desorec: %d nodes, graph %s, %.1f s", len(nodes.keys), nodes.graph, time.perf_counter() - started)
    return DesorecTarget.from_nodes(nodes)
