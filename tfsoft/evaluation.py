"""Full-ranking evaluation: one protocol for every model.

Every query is scored against the **whole catalog** (no sampled metrics: Krichene & Rendle,
"On Sampled Metrics for Item Recommendation", KDD 2020). Items excluded for a query (its
training items, when asked) and invalid items (index 0, the OOV/padding row) get −∞ and can
never be ranked; a query's own targets are never excluded.

**Ties count against the target.** The rank of target t is

    rank(t) = 1 + #{non-target j ranked: s_j >= s_t} + #{targets ordered before t}

(targets ordered by score, descending), so a model that gives every item the same score
earns nothing, whatever the item order. Per query q with targets T_q:

* Recall@K = |{t ∈ T_q : rank(t) <= K}| / |T_q|
* HitRate@K = 1[some target has rank <= K]
* MRR@K = 1 / min_t rank(t) if that is <= K, else 0
* NDCG@K = Σ_{t: rank(t) <= K} 1/log2(rank(t) + 1) / Σ_{i=1}^{min(|T_q|, K)} 1/log2(i + 1)

and each metric is the mean over queries. The long-tail breakdown (SSM paper §4.3) splits
items into 10 popularity groups of equal training interaction mass and reports each group's
contribution to Recall@K; the contributions sum to Recall@K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import DataError

_SCORE_BUDGET = 2**25  # scores held per batch (128 MiB of float32)


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one evaluation.

    Attributes:
        metrics: ``recall@K``, ``ndcg@K``, ``mrr@K``, ``hit_rate@K`` for every K (fractions).
        num_queries: queries evaluated.
        long_tail_recall: K -> contribution of each popularity group (group 0 = most
            popular) to Recall@K, or None when no item counts were given.
    """

    metrics: dict
    num_queries: int
    long_tail_recall: dict | None = None

    def to_dict(self) -> dict:
        payload = {"metrics": {k: float(v) for k, v in self.metrics.items()}, "num_queries": int(self.num_queries)}
        if self.long_tail_recall is not None:
            payload["long_tail_recall"] = {str(k): [float(x) for x in v] for k, v in self.long_tail_recall.items()}
        return payload


def popularity_groups(item_counts: np.ndarray, num_groups: int = 10) -> np.ndarray:
    """Popularity group of every item: items sorted by count (descending, ties by index) are
    cut into ``num_groups`` groups of about equal total interaction count (SSM paper §4.3,
    following Wu et al. SGL). Group 0 holds the most popular items; zero-count items go to
    the last group.

    Args:
        item_counts: [N] non-negative training counts.
    Returns:
        [N] int64 group ids in ``0 .. num_groups - 1``.
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise DataError(f"item_counts must be a 1-D array of non-negative counts; got shape {counts.shape}")
    if num_groups < 1:
        raise DataError(f"num_groups must be >= 1; got {num_groups}")
    order = np.lexsort((np.arange(len(counts)), -counts))
    total = counts.sum()
    groups = np.full(len(counts), num_groups - 1, dtype=np.int64)
    if total > 0:
        # Mass strictly before each item, in sorted order: an item belongs to the group its
        # cumulative mass midpoint falls in.
        cumulative = np.cumsum(counts[order]) - counts[order] / 2
        groups[order] = np.minimum((cumulative / total * num_groups).astype(np.int64), num_groups - 1)
        groups[order[counts[order] == 0]] = num_groups - 1
    return groups


def _as_ragged(name: str, rows, num_queries: int, num_items: int) -> list[np.ndarray]:
    if isinstance(rows, np.ndarray) and rows.ndim == 1:
        rows = [rows[i : i + 1] for i in range(len(rows))]
    rows = list(rows)
    if len(rows) != num_queries:
        raise DataError(f"{name} has {len(rows)} rows but there are {num_queries} queries")
    out = []
    for index, row in enumerate(rows):
        row = np.unique(np.asarray(row, dtype=np.int64).reshape(-1))
        if len(row) and (row.min() < 0 or row.max() >= num_items):
            bad = row[(row < 0) | (row >= num_items)][0]
            raise DataError(f"{name} of query {index} holds item {bad}, outside the catalog [0, {num_items})")
        out.append(row)
    return out


def _pad(rows: list[np.ndarray], fill: int = -1) -> np.ndarray:
    width = max(1, max((len(r) for r in rows), default=1))
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@tf.function(reduce_retracing=True)
def _batch_ranks(query, catalog, targets, exclude, valid, max_k):
    """Pessimistic ranks of the (padded, −1) targets of a batch of queries: [B, T] float32,
    targets sorted by score within each row; ``inf`` for padding and for ranks > ``max_k``.

    Only the top ``max_k + T`` scores of each row are needed (``tf.math.top_k``, not a full
    sort): a target scoring <= the last of them has at least ``max_k`` non-targets ahead."""
    scores = tf.matmul(query, catalog, transpose_b=True)  # [B, N]
    batch = tf.shape(scores)[0]
    neg_inf = tf.fill(tf.shape(scores), tf.constant(-np.inf, scores.dtype))
    scores = tf.where(valid[tf.newaxis, :], scores, neg_inf)
    rows = tf.range(batch, dtype=tf.int64)
    exclude_mask = exclude >= 0
    exclude_index = tf.stack([tf.broadcast_to(rows[:, None], tf.shape(exclude))[exclude_mask],
                              exclude[exclude_mask]], axis=1)
    target_mask = targets >= 0
    scores = tf.tensor_scatter_nd_update(
        scores, exclude_index, tf.fill([tf.shape(exclude_index)[0]], tf.constant(-np.inf, scores.dtype)))
    target_scores = tf.gather(scores, tf.where(target_mask, targets, 0), batch_dims=1)
    target_scores = tf.where(target_mask, target_scores, tf.constant(-np.inf, scores.dtype))
    rankable = target_mask & tf.math.is_finite(target_scores)
    # items scoring >= each target (the target itself and the other targets included) ...
    num_items = tf.shape(scores)[1]
    depth = tf.minimum(num_items, tf.cast(max_k, tf.int32) + tf.shape(targets)[1])
    top = tf.math.top_k(scores, k=depth, sorted=True).values  # [B, depth], descending
    count_ge = tf.cast(tf.searchsorted(-top, -target_scores, side="right"), tf.int32)  # [B, T]
    beyond = (target_scores <= top[:, -1:]) & (depth < num_items)
    # ... minus the targets among them
    targets_ge = tf.reduce_sum(tf.cast(
        (target_scores[:, None, :] >= target_scores[:, :, None]) & rankable[:, None, :], tf.int32), axis=2)
    non_targets_ge = tf.cast(count_ge, tf.int32) - targets_ge
    # order targets by score (descending) and add the number of targets before each one
    order = tf.argsort(target_scores, axis=1, direction="DESCENDING", stable=True)
    sorted_non_targets = tf.gather(non_targets_ge, order, batch_dims=1)
    position = tf.range(tf.shape(targets)[1])[tf.newaxis, :]
    ranks = tf.cast(sorted_non_targets + position + 1, tf.float32)
    keep = tf.gather(rankable & ~beyond, order, batch_dims=1) & (ranks <= tf.cast(max_k, tf.float32))
    ranks = tf.where(keep, ranks, tf.constant(np.inf, tf.float32))
    sorted_targets = tf.gather(targets, order, batch_dims=1)
    return ranks, sorted_targets


def evaluate_full_ranking(
    query_embeddings,
    candidate_embeddings,
    targets,
    exclude=None,
    ks: Sequence[int] = (10, 20),
    item_counts: np.ndarray | None = None,
    num_groups: int = 10,
    batch_size: int | None = None,
    valid_items: np.ndarray | None = None,
) -> EvaluationResult:
    """Rank the whole catalog for every query and compute Recall/NDCG/MRR/HitRate@K.

    Args:
        query_embeddings: [Q, d] (already prepared for the scoring similarity).
        candidate_embeddings: [N, d], row i = item index i.
        targets: Q int arrays of held-out items, or an int array [Q] (one target each).
        exclude: optional Q int arrays of items to remove from each query's ranking.
        ks: cut-offs.
        item_counts: optional [N] training counts; enables the long-tail breakdown.
        num_groups: popularity groups of the breakdown.
        batch_size: queries per batch (default: about 2^25 scores per batch).
        valid_items: optional [N] bool, False = never recommended (e.g. index 0).
    Returns:
        :class:`EvaluationResult`.
    """
    query = np.asarray(query_embeddings, dtype=np.float32)
    catalog = np.asarray(candidate_embeddings, dtype=np.float32)
    if query.ndim != 2 or catalog.ndim != 2 or query.shape[1] != catalog.shape[1]:
        raise DataError(f"query embeddings [Q, d] and candidate embeddings [N, d] must share d; "
                        f"got {query.shape} and {catalog.shape}")
    if not np.isfinite(query).all() or not np.isfinite(catalog).all():
        raise DataError("embeddings contain NaN or infinite values; the model has diverged")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise DataError(f"cut-offs must be >= 1; got {list(ks)}")
    num_queries, num_items = len(query), len(catalog)
    target_rows = _as_ragged("targets", targets, num_queries, num_items)
    empty = [i for i, row in enumerate(target_rows) if len(row) == 0]
    if empty:
        raise DataError(f"query {empty[0]} has no target ({len(empty)} queries without targets)")
    exclude_rows = None
    if exclude is not None:  # a query's own targets are never excluded
        exclude_rows = [np.setdiff1d(row, own, assume_unique=True)
                        for row, own in zip(_as_ragged("exclude", exclude, num_queries, num_items), target_rows)]
    valid = np.ones(num_items, dtype=bool) if valid_items is None else np.asarray(valid_items, dtype=bool)
    if valid.shape != (num_items,):
        raise DataError(f"valid_items must have shape ({num_items},); got {valid.shape}")
    groups = popularity_groups(item_counts, num_groups) if item_counts is not None else None
    if groups is not None and len(groups) != num_items:
        raise DataError(f"item_counts has {len(groups)} entries but the catalog has {num_items} items")
    batch_size = batch_size or max(1, min(num_queries, _SCORE_BUDGET // max(num_items, 1)))

    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "mrr", "hit_rate")}
    tail = {k: np.zeros(num_groups) for k in ks} if groups is not None else None
    catalog_tensor, valid_tensor = tf.constant(catalog), tf.constant(valid)
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    ideal = np.cumsum(discounts)
    for start in range(0, num_queries, batch_size):
        stop = min(start + batch_size, num_queries)
        batch_targets = _pad(target_rows[start:stop])
        batch_exclude = _pad(exclude_rows[start:stop]) if exclude_rows is not None else np.full((stop - start, 1), -1)
        ranks, sorted_targets = _batch_ranks(tf.constant(query[start:stop]), catalog_tensor,
                                             tf.constant(batch_targets), tf.constant(batch_exclude), valid_tensor,
                                             tf.constant(max(ks), tf.int64))
        ranks, sorted_targets = ranks.numpy().astype(np.float64), sorted_targets.numpy()
        sizes = np.array([len(r) for r in target_rows[start:stop]], dtype=np.float64)
        best = ranks[:, 0]
        for k in ks:
            hit = ranks <= k
            hits = hit.sum(axis=1)
            gains = np.where(hit, 1.0 / np.log2(np.minimum(ranks, 1e12) + 1), 0.0).sum(axis=1)
            sums[f"recall@{k}"] += (hits / sizes).sum()
            sums[f"hit_rate@{k}"] += (hits > 0).sum()
            sums[f"mrr@{k}"] += np.where(best <= k, 1.0 / best, 0.0).sum()
            sums[f"ndcg@{k}"] += (gains / ideal[np.minimum(sizes, k).astype(int) - 1]).sum()
            if tail is not None:
                item_group = groups[np.where(sorted_targets >= 0, sorted_targets, 0)]
                weight = hit / sizes[:, None]
                tail[k] += np.bincount(item_group[hit], weights=weight[hit], minlength=num_groups)
    metrics = {name: value / num_queries for name, value in sums.items()}
    long_tail = {k: list(tail[k] / num_queries) for k in ks} if tail is not None else None
    return EvaluationResult(metrics=metrics, num_queries=num_queries, long_tail_recall=long_tail)
