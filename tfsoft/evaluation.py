"""Full-ranking evaluation: one protocol for every model.

Every query is scored against the **whole catalog**; no sampled metrics, which can even
reverse the order of two models (Krichene & Rendle, "On Sampled Metrics for Item
Recommendation", KDD 2020). Items excluded for a query (e.g. its training items) and invalid
items (e.g. index 0, the OOV/padding row) get score −∞ and can never be ranked. **A query's
own targets are never excluded**, even when ``exclude`` lists them (a re-consumed item is
still a correct answer); a target that is not a valid item can never be ranked and counts
as a miss.

**Ties count against the target.** With scores s_j and the (deduplicated) target set T_q,

    rank(t) = 1 + #{j ∉ T_q rankable : s_j >= s_t} + #{u ∈ T_q ordered before t}

where targets are ordered by score, descending (equal scores: smaller item index first). A
model that gives every item the same score therefore earns nothing, whatever the item order
(only K >= N, where every item is in the top K, still counts a hit). Per query:

* Recall@K   = |{t ∈ T_q : rank(t) <= K}| / |T_q|
* HitRate@K  = 1[min_t rank(t) <= K]
* MRR@K      = 1 / min_t rank(t) if that is <= K, else 0
* NDCG@K     = Σ_{t: rank(t) <= K} 1/log2(rank(t) + 1) / Σ_{i=1}^{min(|T_q|, K)} 1/log2(i + 1)

and each metric is the mean over queries (fractions, not percent). The long-tail breakdown
(SSM paper §4.3) splits the items into popularity groups of equal training interaction mass
(:func:`popularity_groups`) and reports each group's contribution to Recall@K:

    LT_g@K = mean_q |{t ∈ T_q : group(t) = g, rank(t) <= K}| / |T_q|,   Σ_g LT_g@K = Recall@K.

Computation: queries go in batches of about 2^25 scores. Per batch one compiled function
scores [B, N], masks excluded/invalid items, keeps the top ``max(ks) + T`` scores of each
row sorted (``tf.math.top_k``: a target that does not beat the last of them has at least
``max(ks)`` non-targets ahead of it, so its exact rank is never needed), counts the items
scoring >= each target with ``tf.searchsorted`` and corrects for the targets themselves with
a small [B, T, T] comparison. Nothing of shape [B, T, N] is built.

Example::

    >>> result = evaluate_full_ranking(np.eye(3), np.eye(3), np.array([0, 1, 2]), ks=(1,))
    >>> result.metrics["recall@1"], result.metrics["ndcg@1"]
    (1.0, 1.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import DataError

SCORE_BUDGET = 2**25  # scores per batch by default (128 MiB of float32)
METRIC_NAMES = ("recall", "ndcg", "mrr", "hit_rate")

ScoreFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of one full-ranking evaluation.

    Attributes:
        metrics: ``recall@K``, ``ndcg@K``, ``mrr@K``, ``hit_rate@K`` for every K (fractions).
        num_queries: queries evaluated.
        long_tail_recall: K -> contribution of each popularity group (group 0 = most
            popular) to Recall@K, summing to ``metrics[f"recall@{K}"]``; None when no item
            counts were given.
    """

    metrics: dict[str, float]
    num_queries: int
    long_tail_recall: dict[int, list[float]] | None = None

    def to_dict(self) -> dict:
        """JSON-friendly copy: ``{"metrics": {...}, "num_queries": Q}`` plus
        ``"long_tail_recall": {"10": [...], ...}`` (string keys) when it was computed."""
        payload = {"metrics": {name: float(value) for name, value in self.metrics.items()},
                   "num_queries": int(self.num_queries)}
        if self.long_tail_recall is not None:
            payload["long_tail_recall"] = {str(k): [float(x) for x in values]
                                           for k, values in self.long_tail_recall.items()}
        return payload


def popularity_groups(item_counts: np.ndarray, num_groups: int = 10) -> np.ndarray:
    """Popularity group of every item, groups of about equal interaction mass.

    Items sorted by training count (descending; equal counts by item index, a stable sort)
    are cut into ``num_groups`` consecutive groups holding about 1/num_groups of all
    interactions each (SSM paper §4.3, following the long-tail protocol of SGL, Wu et al.
    2021). An item goes to the group its cumulative-mass midpoint falls in:

        group(i) = min(floor(num_groups * (C_i - c_i / 2) / Σ c), num_groups - 1)

    with c_i its count and C_i the cumulative count up to and including i in sorted order.
    Group 0 holds the most popular items; items with zero count go to the last group. With
    heavy skew a group can be empty (an item holding more than 1/num_groups of the mass
    alone spans a group boundary).

    Args:
        item_counts: [N] non-negative training interaction counts.
        num_groups: number of groups, >= 1.
    Returns:
        [N] int64 group ids in ``0 .. num_groups - 1``.
    """
    counts = np.asarray(item_counts)
    if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.number):
        raise DataError(f"item_counts must be a 1-D numeric array [N]; got shape {counts.shape}, dtype {counts.dtype}")
    bad = ~np.isfinite(counts.astype(np.float64)) | (counts < 0)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"item_counts must be finite and non-negative; item {first} has count {counts[first]} "
                        f"({int(bad.sum())} bad entries)")
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
        raise DataError(f"num_groups must be an integer >= 1; got {num_groups!r}")
    counts = counts.astype(np.float64)
    order = np.argsort(-counts, kind="stable")
    groups = np.full(len(counts), num_groups - 1, dtype=np.int64)
    total = counts.sum()
    if total > 0:
        sorted_counts = counts[order]
        midpoint = np.cumsum(sorted_counts) - sorted_counts / 2
        # zero-count items come last, midpoint = total: always the last group
        groups[order] = np.minimum((midpoint / total * num_groups).astype(np.int64), num_groups - 1)
    return groups


def dot_product(query: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """Default score: s_qj = <query_q, candidate_j>. [B, d] x [N, d] -> [B, N]."""
    return tf.matmul(query, candidates, transpose_b=True)


def pessimistic_ranks(scores: tf.Tensor, targets: tf.Tensor, max_k: tf.Tensor) -> tf.Tensor:
    """Rank of every target with ties resolved against it, or ∞ when it is beyond ``max_k``.

    With count_ge(t) = #{j : s_j >= s_t} over all items (t and the other targets included),

        rank(t) = count_ge(t) − #{u ∈ T_q rankable : s_u = s_t, u after t}

    which equals 1 + #{non-targets j : s_j >= s_t} + #{targets ordered before t} (targets by
    score descending, ties by position in the row, i.e. by item index for sorted rows).
    count_ge is read with ``tf.searchsorted`` from the top ``max_k + T`` scores of each row
    (a partial sort: ~30x faster than sorting 100k scores). If s_t is not above the last of
    them, at least ``max_k + T`` items score >= s_t, at most T of them targets, so rank(t) >
    max_k; the capped count then still gives a rank >= max_k + 1, reported as ∞. (Full
    ranking as in Krichene & Rendle, KDD 2020; ties counted against the target.)

    Args:
        scores: [B, N] float32; −∞ for items that may not be ranked.
        targets: [B, T] int64 item indices, −1 = padding; distinct within a row.
        max_k: scalar int32, the largest cut-off needed.
    Returns:
        [B, T] float32 ranks (1 = best), ∞ for padding, unrankable targets (score −∞) and
        targets ranked below ``max_k``.
    """
    num_items = tf.shape(scores)[1]
    width = tf.shape(targets)[1]
    present = targets >= 0
    neg_inf = tf.constant(-np.inf, scores.dtype)
    target_scores = tf.gather(scores, tf.where(present, targets, tf.zeros_like(targets)), batch_dims=1)
    target_scores = tf.where(present, target_scores, neg_inf)  # [B, T]
    rankable = present & (target_scores > neg_inf)

    depth = tf.minimum(num_items, max_k + width)
    top = tf.math.top_k(scores, k=depth, sorted=True).values  # [B, depth], descending
    # #{top scores >= s_t}; equals count_ge(t) whenever s_t is above the last top score, and
    # is capped at depth otherwise, which still yields a rank > max_k below.
    count_ge = tf.searchsorted(-top, -target_scores, side="right", out_type=tf.int32)  # [B, T]

    # [B, T(t), T(u)]: targets u tied with t and placed after it in the row. Padding and
    # unrankable targets score -inf, so they never tie with a rankable t.
    positions = tf.range(width)
    after = positions[tf.newaxis, tf.newaxis, :] > positions[tf.newaxis, :, tf.newaxis]
    tied_after = tf.equal(target_scores[:, :, tf.newaxis], target_scores[:, tf.newaxis, :]) & after
    ranks = tf.cast(count_ge - tf.reduce_sum(tf.cast(tied_after, tf.int32), axis=2), tf.float32)
    keep = rankable & (ranks <= tf.cast(max_k, tf.float32))
    return tf.where(keep, ranks, tf.constant(np.inf, tf.float32))


@functools.lru_cache(maxsize=16)
def _compiled_ranker(score_fn: ScoreFn):
    """One compiled batch ranker per scoring function: traced once (fixed input_signature
    with unknown batch, target and exclusion widths), reused by every batch and call."""

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32),  # query [B, d]
        tf.TensorSpec([None, None], tf.float32),  # candidates [N, d]
        tf.TensorSpec([None, None], tf.int64),  # targets [B, T], -1 padded
        tf.TensorSpec([None, None], tf.int64),  # exclude [B, E], -1 padded
        tf.TensorSpec([None], tf.bool),  # valid items [N]
        tf.TensorSpec([], tf.int32),  # max_k
    ])
    def rank_batch(query, candidates, targets, exclude, valid, max_k):
        scores = tf.cast(score_fn(query, candidates), tf.float32)  # [B, N]
        bad = tf.reduce_any(~tf.math.is_finite(scores), axis=1)  # [B]: NaN/inf scores break ranking
        neg_inf = tf.constant(-np.inf, tf.float32)
        # 0 / -inf bias rather than tf.where: a broadcast add is ~10x cheaper on CPU than a
        # broadcast select, and the scores are finite here (anything else is reported).
        scores = scores + tf.where(valid, tf.constant(0.0, tf.float32), neg_inf)[tf.newaxis, :]
        listed = exclude >= 0
        rows = tf.broadcast_to(tf.range(tf.shape(exclude, out_type=tf.int64)[0])[:, tf.newaxis], tf.shape(exclude))
        index = tf.stack([rows[listed], exclude[listed]], axis=1)
        scores = tf.tensor_scatter_nd_update(scores, index, tf.fill(tf.shape(index)[:1], neg_inf))
        return pessimistic_ranks(scores, targets, max_k), bad

    return rank_batch


def ranking_metrics(ranks: np.ndarray, sizes: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query Recall/NDCG/MRR/HitRate@K from target ranks (formulas in the module docstring).

    Args:
        ranks: [B, T] ranks (1 = best), ∞ for padding and misses.
        sizes: [B] number of targets |T_q| of each query (>= 1).
        ks: cut-offs.
    Returns:
        ``{"recall@K": [B], "ndcg@K": [B], "mrr@K": [B], "hit_rate@K": [B]}`` for every K.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    best = ranks.min(axis=1)
    gain = 1.0 / np.log2(ranks + 1.0)  # 0 for ∞ (misses, padding)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, max(ks) + 2)))  # ideal[i - 1] = Σ_{r<=i} 1/log2(r+1)
    out = {}
    for k in ks:
        hit = ranks <= k
        hits = hit.sum(axis=1)
        out[f"recall@{k}"] = hits / sizes
        out[f"ndcg@{k}"] = np.where(hit, gain, 0.0).sum(axis=1) / ideal[np.minimum(sizes, k) - 1]
        out[f"mrr@{k}"] = np.where(best <= k, 1.0 / best, 0.0)
        out[f"hit_rate@{k}"] = (hits > 0).astype(np.float64)
    return out


def _embeddings(name: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D float array [rows, d]; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{name} must hold real numbers; got dtype {array.dtype}")
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise DataError(f"{name} contains NaN or infinite values ({int((~finite).sum())} entries, first at "
                        f"row {row}, column {col}: {array[row, col]}); the model has probably diverged")
    return array


def _index_rows(name: str, rows, num_queries: int, num_items: int) -> list[np.ndarray] | np.ndarray:
    """Per-query item indices, sorted and deduplicated: a list of Q int64 arrays, or for an
    int array [Q] (one item per query) that array as [Q, 1]."""
    if isinstance(rows, (np.ndarray, tf.Tensor)) and np.ndim(rows) == 1:
        flat = np.asarray(rows)
        if len(flat) != num_queries:
            raise DataError(f"{name} has {len(flat)} entries; expected one per query, {num_queries} "
                            f"(query_embeddings has {num_queries} rows)")
        rows_array = _as_indices(name, flat, "all queries")
        bad = np.flatnonzero((rows_array < 0) | (rows_array >= num_items))
        if len(bad):
            raise DataError(f"{name} of query {bad[0]} is item {rows_array[bad[0]]}, outside the catalog "
                            f"[0, {num_items}) (candidate_embeddings has {num_items} rows)")
        return rows_array[:, np.newaxis]
    try:
        rows = list(rows)
    except TypeError:
        raise DataError(f"{name} must be a sequence of {num_queries} int arrays (one per query) or an int "
                        f"array [{num_queries}]; got {type(rows).__name__}") from None
    if len(rows) != num_queries:
        raise DataError(f"{name} has {len(rows)} rows; expected one per query, {num_queries} "
                        f"(query_embeddings has {num_queries} rows)")
    out = []
    for query, row in enumerate(rows):
        row = np.unique(_as_indices(name, np.asarray(row).reshape(-1), f"query {query}"))
        if len(row) and (row[0] < 0 or row[-1] >= num_items):
            bad = row[0] if row[0] < 0 else row[-1]
            raise DataError(f"{name} of query {query} holds item {bad}, outside the catalog [0, {num_items}) "
                            f"(candidate_embeddings has {num_items} rows)")
        out.append(row)
    return out


def _as_indices(name: str, values: np.ndarray, where: str) -> np.ndarray:
    if values.size == 0:
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    raise DataError(f"{name} of {where} must be integer item indices; got dtype {values.dtype} "
                    f"(e.g. {values.reshape(-1)[:3].tolist()})")


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(rows), max(1, max(len(r) for r in rows))), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _cutoffs(ks) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not ks:
        raise DataError("ks must hold at least one cut-off K; got an empty sequence")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise DataError(f"every cut-off K in ks must be an integer >= 1; got {list(ks)}")
    return tuple(sorted({int(k) for k in ks}))


def evaluate_full_ranking(
    query_embeddings,
    candidate_embeddings,
    targets,
    exclude=None,
    ks: Sequence[int] = (10, 20),
    item_counts: np.ndarray | None = None,
    num_groups: int = 10,
    batch_size: int | None = None,
    score_fn: ScoreFn | None = None,
    valid_items: np.ndarray | None = None,
) -> EvaluationResult:
    """Rank the whole catalog for every query; Recall/NDCG/MRR/HitRate@K with pessimistic ties.

    Protocol and formulas: module docstring (full ranking, Krichene & Rendle, KDD 2020;
    long-tail groups, SSM paper §4.3).

    Example::

        >>> evaluate_full_ranking(np.ones((2, 2)), np.ones((5, 2)), np.array([0, 3]), ks=(4,)).metrics["recall@4"]
        0.0

    Args:
        query_embeddings: [Q, d] float (NumPy or tf), computed in float32.
        candidate_embeddings: [N, d] float, the whole catalog; row i = item index i.
        targets: Q int arrays of held-out items (one or many each, duplicates ignored), or an
            int array [Q] with one target per query. Every query needs at least one target.
        exclude: optional Q int arrays of items removed from each query's ranking (e.g. its
            training items). A query's own targets are never excluded, even if listed.
        ks: cut-offs K (integers >= 1; duplicates ignored). Metrics come for every K.
        item_counts: optional [N] training interaction counts; when given, the long-tail
            breakdown ``long_tail_recall`` is computed.
        num_groups: popularity groups of the long-tail breakdown.
        batch_size: queries per batch; default: as many as keep B * N <= 2^25 scores.
        score_fn: optional ``(query [B, d], candidates [N, d]) -> scores [B, N]`` TensorFlow
            function; default :func:`dot_product` (for cosine, L2-normalise the embeddings
            first). Scores must be finite (mask items with ``valid_items``/``exclude``, not
            −∞). Traced once per distinct callable (up to 16 cached): pass the same object.
        valid_items: optional [N] bool, False = never recommended (e.g. index 0, the OOV /
            padding row). Default: every item. A target that is not valid counts as a miss.
    Returns:
        :class:`EvaluationResult` with means over the Q queries.
    Raises:
        DataError: on inputs of the wrong shape, targets/exclusions outside ``[0, N)``, a query
            without targets, NaN/infinite embeddings or scores, K <= 0 or a bad batch size.
    """
    query = _embeddings("query_embeddings", query_embeddings)
    catalog = _embeddings("candidate_embeddings", candidate_embeddings)
    if query.shape[1] != catalog.shape[1]:
        raise DataError(f"query_embeddings [Q, d] and candidate_embeddings [N, d] must have the same d; got "
                        f"shapes {query.shape} and {catalog.shape}")
    num_queries, num_items = query.shape[0], catalog.shape[0]
    if num_queries == 0 or num_items == 0:
        raise DataError(f"need at least one query and one candidate; got query_embeddings {query.shape} and "
                        f"candidate_embeddings {catalog.shape}")
    ks = _cutoffs(ks)
    target_rows = _index_rows("targets", targets, num_queries, num_items)
    if isinstance(target_rows, list):
        empty = [q for q, row in enumerate(target_rows) if len(row) == 0]
        if empty:
            raise DataError(f"query {empty[0]} has no target ({len(empty)} of {num_queries} queries have none: "
                            f"{empty[:5]}); every query needs at least one held-out item")
    exclude_rows = None
    if exclude is not None:
        exclude_rows = _index_rows("exclude", exclude, num_queries, num_items)
        exclude_rows = [np.setdiff1d(row, own, assume_unique=True)  # targets are never excluded
                        for row, own in zip(exclude_rows, target_rows)]
    if valid_items is None:
        valid = np.ones(num_items, dtype=bool)
    else:
        valid = np.asarray(valid_items)
        if valid.shape != (num_items,) or valid.dtype != bool:
            raise DataError(f"valid_items must be a bool array of shape ({num_items},) (one per candidate); got "
                            f"shape {valid.shape}, dtype {valid.dtype}")
    groups = None
    if item_counts is not None:
        groups = popularity_groups(item_counts, num_groups)
        if len(groups) != num_items:
            raise DataError(f"item_counts has {len(groups)} entries; expected one per candidate, {num_items}")
    if batch_size is None:
        batch_size = max(1, min(num_queries, SCORE_BUDGET // num_items))
    elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1; got {batch_size!r}")

    rank_batch = _compiled_ranker(score_fn or dot_product)
    catalog_t, valid_t, max_k = tf.constant(catalog), tf.constant(valid), tf.constant(max(ks), tf.int32)
    sums = {f"{name}@{k}": 0.0 for k in ks for name in METRIC_NAMES}
    tail = {k: np.zeros(num_groups) for k in ks} if groups is not None else None
    for start in range(0, num_queries, batch_size):
        stop = min(start + batch_size, num_queries)
        if isinstance(target_rows, np.ndarray):
            batch_targets, sizes = target_rows[start:stop], np.ones(stop - start, dtype=np.int64)
        else:
            batch_targets = _pad(target_rows[start:stop])
            sizes = np.array([len(row) for row in target_rows[start:stop]], dtype=np.int64)
        batch_exclude = (_pad(exclude_rows[start:stop]) if exclude_rows is not None
                         else np.full((stop - start, 1), -1, dtype=np.int64))
        ranks, bad = rank_batch(tf.constant(query[start:stop]), catalog_t, tf.constant(batch_targets),
                                tf.constant(batch_exclude), valid_t, max_k)
        bad = bad.numpy()
        if bad.any():
            raise DataError(f"the scores of query {start + int(np.argmax(bad))} contain NaN or infinite values "
                            f"({int(bad.sum())} queries of batch [{start}, {stop})); expected finite scores: check "
                            "score_fn for 0/0 (e.g. cosine of a zero vector) or the embeddings for overflow")
        ranks = ranks.numpy()
        per_query = ranking_metrics(ranks, sizes, ks)
        for name, values in per_query.items():
            sums[name] += float(values.sum())
        if tail is not None:
            target_groups = groups[np.maximum(batch_targets, 0)]  # padding: rank ∞, never a hit
            weight = np.broadcast_to(1.0 / sizes[:, np.newaxis], ranks.shape)
            for k in ks:
                hit = ranks <= k
                tail[k] += np.bincount(target_groups[hit], weights=weight[hit], minlength=num_groups)
    metrics = {name: value / num_queries for name, value in sums.items()}
    long_tail = {k: [float(x) for x in tail[k] / num_queries] for k in ks} if tail is not None else None
    return EvaluationResult(metrics=metrics, num_queries=num_queries, long_tail_recall=long_tail)
