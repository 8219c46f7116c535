"""Retrieval indexes for export: exact brute force and ScaNN, as ``tf.Module`` objects.

Both index the catalog rows ``1 .. V-1`` (row 0 is the OOV/padding item and is never
returned) and answer ``search(queries [B, d], num_results, exclude=None) -> (item indices
[B, n], scores [B, n])`` with indices in the model's item index space, best first;
``exclude`` [B, E] (item indices, padding <= 0 ignored) removes items per query. A slot left
without an item holds index 0 and :data:`tfsoft.topk.LOWEST_SCORE`.

* :class:`BruteForceIndex` — :func:`tfsoft.topk.exact_top_k`: ``scores = Q·Eᵀ``, excluded
  items masked in the score matrix, then ``tf.math.top_k``: stock TensorFlow ops, exact,
  servable by any TF Serving build.
* :class:`ScannIndex` — ScaNN (Guo et al., ICML'20, "Accelerating Large-Scale Inference with
  Anisotropic Vector Quantization"): a k-means tree partitions the catalog, anisotropic
  (score-aware) product quantisation scores the searched leaves, and the best
  ``reorder_num_neighbors`` are re-scored exactly. Built with ``scann.scann_ops`` (ScaNN's own
  TF ops, serialised into the SavedModel as variables); a server needs ScaNN's ops registered
  (``import scann`` in Python, a ScaNN-linked ``tensorflow_model_server`` in production).
  Exclusions: ScaNN is asked for ``num_results + E`` results and
  :func:`tfsoft.topk.drop_excluded` keeps the best ``num_results`` allowed ones.

:func:`index_recall` measures an approximate index against exact search on real queries.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ExportError
from tfsoft.topk import drop_excluded, exact_top_k

INDEX_KINDS = ("brute_force", "scann")


class BruteForceIndex(tf.Module):
    """Exact maximum inner product search over ``embeddings[1:]`` (:func:`tfsoft.topk.exact_top_k`).

    Args:
        embeddings: [V, d] candidate embeddings in item-index order (row 0 = OOV, never returned).
    """

    kind = "brute_force"

    def __init__(self, embeddings: np.ndarray, name: str = "brute_force_index"):
        super().__init__(name=name)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        _check_embeddings(embeddings)
        self.num_candidates = embeddings.shape[0] - 1
        self.candidates = tf.Variable(embeddings, trainable=False, name="candidates")  # row 0 masked by search

    def search(self, queries, num_results, exclude=None):
        """Exact top-``num_results`` [B, min(num_results, V-1)]; ``exclude`` [B, E] is masked in the
        score matrix (no over-fetch)."""
        return exact_top_k(queries, self.candidates, num_results, exclude)


@dataclass(frozen=True)
class ScannParams:
    """ScaNN settings (``None`` = sized from the catalog, see :meth:`resolve`).

    Attributes:
        num_leaves: k-means partitions of the tree (default ≈ √N, at least 1).
        num_leaves_to_search: partitions scored per query (default: a quarter of the leaves,
            at least 8; more = higher recall, slower).
        training_sample_size: points used to train the tree (default: all, at most 250,000).
        dimensions_per_block: dimensions per product-quantisation block (2 = 4-bit per 2 dims).
        anisotropic_quantization_threshold: η of the score-aware loss (ScaNN paper §3; 0.2 is the
            authors' default for normalised embeddings).
        reorder_num_neighbors: candidates re-scored exactly (default 4·k, at least 100).
    """

    num_leaves: Optional[int] = None
    num_leaves_to_search: Optional[int] = None
    training_sample_size: Optional[int] = None
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    reorder_num_neighbors: Optional[int] = None

    def resolve(self, num_candidates: int, k: int) -> "ScannParams":
        """Fill the ``None`` fields for a catalog of ``num_candidates`` items and top-``k``."""
        leaves = self.num_leaves or max(1, min(num_candidates, int(round(math.sqrt(num_candidates)))))
        search = self.num_leaves_to_search or max(min(8, leaves), leaves // 4)
        sample = self.training_sample_size or min(num_candidates, 250_000)
        reorder = self.reorder_num_neighbors or max(4 * k, 100)
        resolved = ScannParams(num_leaves=leaves, num_leaves_to_search=min(search, leaves),
                               training_sample_size=max(min(sample, num_candidates), leaves),
                               dimensions_per_block=self.dimensions_per_block,
                               anisotropic_quantization_threshold=self.anisotropic_quantization_threshold,
                               reorder_num_neighbors=min(reorder, num_candidates))
        if leaves > num_candidates:
            raise ExportError(f"scann.num_leaves ({leaves}) exceeds the number of candidates ({num_candidates})")
        return resolved

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ScannIndex(tf.Module):
    """ScaNN search over ``embeddings[1:]`` (inner product), serialised into the SavedModel.

    Args:
        embeddings: [V, d] candidate embeddings in item-index order (row 0 = OOV, skipped).
        k: results a search returns by default (the searcher is built for it).
        params: :class:`ScannParams`; unset fields are sized from the catalog.
    """

    kind = "scann"

    def __init__(self, embeddings: np.ndarray, k: int, params: ScannParams = ScannParams(),
                 name: str = "scann_index"):
        super().__init__(name=name)
        from scann.scann_ops.py import scann_ops  # registers the Scann>* ops

        embeddings = np.asarray(embeddings, dtype=np.float32)
        _check_embeddings(embeddings)
        self.num_candidates = embeddings.shape[0] - 1
        self.params = params.resolve(self.num_candidates, k)
        self.k = min(k, self.num_candidates)
        #: reorder depths :meth:`tune` may choose from (only the configured one when it was set)
        self.reorder_choices = ((self.params.reorder_num_neighbors,) if params.reorder_num_neighbors is not None
                                else reorder_choices(self.k, self.num_candidates, self.params.reorder_num_neighbors))
        p = self.params
        builder = scann_ops.builder(embeddings[1:], min(k, self.num_candidates), "dot_product")
        if p.num_leaves > 1:
            builder = builder.tree(num_leaves=p.num_leaves, num_leaves_to_search=p.num_leaves_to_search,
                                   training_sample_size=p.training_sample_size)
        builder = builder.score_ah(p.dimensions_per_block,
                                   anisotropic_quantization_threshold=p.anisotropic_quantization_threshold)
        builder = builder.reorder(max(self.reorder_choices))
        searcher = builder.build()
        self.state = searcher.serialize_to_module()
        self._scann_ops = scann_ops
        self.leaves_to_search = p.num_leaves_to_search
        self.reorder_num_neighbors = p.reorder_num_neighbors

    def search(self, queries, num_results, exclude=None):
        """Approximate top-``num_results``; with ``exclude`` [B, E], ScaNN is asked for
        ``num_results + E`` and :func:`tfsoft.topk.drop_excluded` keeps the best allowed ones.
        Slots ScaNN leaves empty (index 0) get :data:`tfsoft.topk.LOWEST_SCORE` either way."""
        if exclude is None:
            exclude = tf.zeros([tf.shape(queries)[0], 0], tf.int64)
        searcher = self._scann_ops.searcher_from_module(self.state)
        wanted = tf.cast(num_results, tf.int32)
        fetch = tf.minimum(wanted + tf.shape(exclude)[1], self.num_candidates)
        reorder = tf.maximum(fetch, self.reorder_num_neighbors)
        indices, scores = searcher.search_batched(queries, final_num_neighbors=fetch,
                                                  pre_reorder_num_neighbors=reorder,
                                                  leaves_to_search=self.leaves_to_search)
        indices, scores = drop_excluded(tf.cast(indices, tf.int32) + 1, scores, exclude,
                                        tf.minimum(wanted, self.num_candidates))
        return tf.cast(indices, tf.int32), scores

    def tune(self, queries: np.ndarray, embeddings: np.ndarray, k: int, min_recall: float,
             tolerance: float = 0.05, timing_repeats: int = 3) -> list[dict]:
        """Choose the fastest setting whose recall@k on ``queries`` reaches ``min_recall``.

        Two knobs set the cost of a query: the leaves searched (every point of a searched leaf is
        scored with the quantised scores) and the candidates re-scored exactly
        (``reorder_num_neighbors``: a random read of a full-precision row each). For each reorder
        depth of :attr:`reorder_choices` (``k``, ``2k``, ``4k`` unless ``scann.reorder_num_neighbors``
        was set), :meth:`_fewest_leaves` finds the fewest leaves that reach the floor; the passing
        pairs are then timed on ``queries`` (best of ``timing_repeats``) and the fastest is kept.
        Fewer re-scored candidates need more leaves for the same recall, and which side wins depends
        on the catalog, the dimension and the machine, so it is measured rather than modelled.
        If no pair reaches the floor, every leaf with the deepest reorder is kept.

        Returns the ladder ``[{"leaves_to_search", "reorder_num_neighbors", "recall"[, "search_seconds"]}, ...]``
        in the order measured, with the chosen setting moved last (its recall is what the floor
        was checked against)."""
        measured: dict[tuple[int, int], dict] = {}
        start = self.leaves_to_search
        passing = []
        for depth, reorder in enumerate(sorted(self.reorder_choices, reverse=True)):
            self.reorder_num_neighbors = reorder
            leaves = self._fewest_leaves(queries, embeddings, k, min_recall, tolerance, start, measured,
                                         ceiling_first=depth > 0)
            if measured[(leaves, reorder)]["recall"] >= min_recall:
                passing.append((leaves, reorder))
                start = leaves
        if len(passing) > 1:
            batch = tf.constant(np.asarray(queries, np.float32))
            for leaves, reorder in passing:
                self.leaves_to_search, self.reorder_num_neighbors = leaves, reorder
                seconds = []
                for _ in range(timing_repeats + 1):  # the first call warms up
                    started = time.perf_counter()
                    self.search(batch, k)[0].numpy()
                    seconds.append(time.perf_counter() - started)
                measured[(leaves, reorder)]["search_seconds"] = round(min(seconds[1:]), 6)
            chosen = min(passing, key=lambda pair: measured[pair]["search_seconds"])
        else:
            chosen = passing[0] if passing else (self.params.num_leaves, max(self.reorder_choices))
        self.leaves_to_search, self.reorder_num_neighbors = chosen
        ladder = [step for pair, step in measured.items() if pair != chosen]
        return ladder + [measured[chosen]]

    def _fewest_leaves(self, queries, embeddings, k, min_recall, tolerance, start, measured,
                       ceiling_first: bool = False) -> int:
        """The fewest ``leaves_to_search`` reaching ``min_recall`` at the current reorder depth.

        With ``ceiling_first`` (a shallower depth than one already tuned), all leaves are measured
        first when ``start`` fails: a depth whose re-scoring caps recall below the floor is then
        given up after one exhaustive pass instead of a doubling ladder. From ``start``, halve while the floor holds (or double while it does not) until one setting
        passes and one fails, then bisect until they are within ``tolerance`` of the passing one
        (or adjacent); recall grows with the leaves searched, so the bracket holds the answer. All
        leaves when even they miss the floor. Every measurement lands in ``measured``."""
        total, reorder = self.params.num_leaves, self.reorder_num_neighbors

        def passes(leaves: int) -> bool:
            if (leaves, reorder) not in measured:
                self.leaves_to_search = leaves
                measured[(leaves, reorder)] = {"leaves_to_search": leaves, "reorder_num_neighbors": reorder,
                                               "recall": index_recall(self, queries, embeddings, k)}
            return measured[(leaves, reorder)]["recall"] >= min_recall

        start = min(max(1, int(start)), total)
        failing, fewest = 0, None  # 0 leaves find nothing: a "failing" lower end
        if passes(start):
            fewest = start
            while fewest > 1 and passes(max(1, fewest // 2)):
                fewest = max(1, fewest // 2)
            failing = max(1, fewest // 2) if fewest > 1 else 0
        else:
            failing = start
            if ceiling_first and not passes(total):
                return total
            while failing < total:
                upper = min(total, 2 * failing)
                if passes(upper):
                    fewest = upper
                    break
                failing = upper
        if fewest is None:
            return total
        while fewest - failing > max(1, int(tolerance * fewest)):
            middle = (fewest + failing) // 2
            if passes(middle):
                fewest = middle
            else:
                failing = middle
        return fewest


def reorder_choices(k: int, num_candidates: int, largest: int) -> tuple[int, ...]:
    """Reorder depths :meth:`ScannIndex.tune` tries: ``k``, ``2k`` and ``4k`` (at least 100, the
    default depth ``largest``), none above the catalog; ascending."""
    return tuple(sorted({min(depth, num_candidates) for depth in (k, 2 * k, largest)}))


def build_index(kind: str, embeddings: np.ndarray, k: int, scann: ScannParams = ScannParams()):
    """A :class:`BruteForceIndex` or :class:`ScannIndex` over ``embeddings`` (row 0 skipped)."""
    if kind == "brute_force":
        return BruteForceIndex(embeddings)
    if kind == "scann":
        return ScannIndex(embeddings, k, scann)
    raise ExportError(f"index must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")


def index_recall(index, queries: np.ndarray, embeddings: np.ndarray, k: int, batch_size: int = 1024) -> float:
    """Mean recall@k of ``index`` against exact search (:func:`tfsoft.topk.exact_top_k`):
    ``|approx ∩ exact| / k`` per query.

    Args:
        index: an index of this module over ``embeddings``.
        queries: [Q, d] query embeddings; embeddings: [V, d] (row 0 = OOV); k: results compared.
    """
    queries = np.asarray(queries, np.float32)
    if len(queries) == 0:
        raise ExportError("index recall needs at least one query")
    k = min(k, index.num_candidates)
    candidates = tf.constant(np.asarray(embeddings, np.float32))
    # the exact scores of a chunk are [chunk, V] floats: at most 2^26 of them (256 MiB) at a time
    batch_size = max(1, min(batch_size, 2 ** 26 // max(1, len(embeddings))))
    hits = 0
    for start in range(0, len(queries), batch_size):
        chunk = tf.constant(queries[start:start + batch_size])
        found = index.search(chunk, k)[0].numpy()
        exact = exact_top_k(chunk, candidates, k)[0].numpy()
        hits += sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist()))
    return hits / (len(queries) * k)


def _check_embeddings(embeddings: np.ndarray) -> None:
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ExportError(f"candidate embeddings must be [V >= 2, d] (row 0 = OOV); got shape {embeddings.shape}")
    if not np.all(np.isfinite(embeddings)):
        bad = int(np.argwhere(~np.isfinite(embeddings))[0][0])
        raise ExportError(f"candidate embeddings hold NaN/Inf (first at item index {bad}); the model diverged")
