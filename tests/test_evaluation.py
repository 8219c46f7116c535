import math

import numpy as np
import pytest

from tfsoft.errors import DataError
from tfsoft.evaluation import evaluate_full_ranking, popularity_groups

RNG = np.random.default_rng(0)


def reference(query, catalog, targets, exclude=None, ks=(5, 10), valid=None, groups=None, num_groups=10):
    """Explicit pessimistic ranking, one query at a time."""
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "mrr", "hit_rate")}
    tail = {k: np.zeros(num_groups) for k in ks}
    for q in range(len(query)):
        own = sorted(set(int(t) for t in np.atleast_1d(targets[q])))
        scores = catalog @ query[q]
        banned = set() if exclude is None else set(int(e) for e in exclude[q]) - set(own)
        rankable = [j for j in range(len(catalog)) if j not in banned and (valid is None or valid[j])]
        ordered = sorted([t for t in own if t in rankable], key=lambda t: -scores[t])
        ranks = {}
        for position, t in enumerate(ordered):
            ahead = sum(1 for j in rankable if j not in own and scores[j] >= scores[t])
            ranks[t] = ahead + position + 1
        for k in ks:
            hits = [t for t, r in ranks.items() if r <= k]
            sums[f"recall@{k}"] += len(hits) / len(own)
            sums[f"hit_rate@{k}"] += bool(hits)
            best = min(ranks.values(), default=math.inf)
            sums[f"mrr@{k}"] += 1 / best if best <= k else 0
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(own), k)))
            sums[f"ndcg@{k}"] += sum(1 / math.log2(ranks[t] + 1) for t in hits) / idcg
            if groups is not None:
                for t in hits:
                    tail[k][groups[t]] += 1 / len(own)
    return {name: value / len(query) for name, value in sums.items()}, {k: tail[k] / len(query) for k in ks}


def check(result, expected):
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-9), name


def test_single_target_matches_reference_across_batches():
    query, catalog = RNG.normal(size=(23, 4)), RNG.normal(size=(40, 4))
    targets = RNG.integers(0, 40, size=23)
    expected, _ = reference(query, catalog, targets)
    check(evaluate_full_ranking(query, catalog, targets, ks=(5, 10), batch_size=7), expected)


def test_multi_target_with_exclusion_valid_mask_and_long_tail():
    query, catalog = RNG.normal(size=(17, 3)), RNG.normal(size=(30, 3))
    targets = [RNG.choice(np.arange(1, 30), size=RNG.integers(1, 6), replace=False) for _ in range(17)]
    exclude = [RNG.choice(30, size=RNG.integers(0, 8), replace=False) for _ in range(17)]
    exclude[0] = np.concatenate([exclude[0], targets[0][:1]])  # a target listed as seen stays rankable
    valid = np.ones(30, dtype=bool)
    valid[0] = False
    counts = RNG.integers(0, 50, size=30)
    groups = popularity_groups(counts)
    expected, tail = reference(query, catalog, targets, exclude, valid=valid, groups=groups)
    result = evaluate_full_ranking(query, catalog, targets, exclude=exclude, ks=(5, 10), item_counts=counts,
                                   batch_size=5, valid_items=valid)
    check(result, expected)
    for k in (5, 10):
        np.testing.assert_allclose(result.long_tail_recall[k], tail[k], atol=1e-9)
        assert sum(result.long_tail_recall[k]) == pytest.approx(result.metrics[f"recall@{k}"])


def test_perfect_model_scores_one():
    catalog = np.eye(6)
    query = np.eye(6)[[2, 4]]
    result = evaluate_full_ranking(query, catalog, np.array([2, 4]), ks=(1, 3))
    assert result.metrics["recall@1"] == 1 and result.metrics["ndcg@1"] == 1 and result.metrics["mrr@3"] == 1


def test_constant_scores_earn_nothing():
    catalog, query = np.ones((10, 2)), np.ones((3, 2))
    result = evaluate_full_ranking(query, catalog, np.array([0, 5, 9]), ks=(5, 9))
    assert all(value == 0 for value in result.metrics.values())
    full = evaluate_full_ranking(query, catalog, np.array([0, 5, 9]), ks=(10,))
    assert full.metrics["recall@10"] == 1  # K = N: every item is in the top N


def test_ties_by_hand():
    # scores: item0=3, item1=2, item2=2, item3=1; target item2 ties item1 -> rank 3 (pessimistic)
    catalog = np.array([[3.0], [2.0], [2.0], [1.0]])
    result = evaluate_full_ranking(np.array([[1.0]]), catalog, np.array([2]), ks=(2, 3))
    assert result.metrics["recall@2"] == 0 and result.metrics["recall@3"] == 1
    assert result.metrics["mrr@3"] == pytest.approx(1 / 3)
    assert result.metrics["ndcg@3"] == pytest.approx(1 / math.log2(4))
    # two tied targets: ranks 2 and 3 (item0 ahead); ideal DCG over 2 targets
    two = evaluate_full_ranking(np.array([[1.0]]), catalog, [np.array([1, 2])], ks=(3,))
    assert two.metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_popularity_groups_equal_mass_by_hand():
    counts = np.array([50, 30, 10, 5, 5, 0])  # total 100
    groups = popularity_groups(counts, num_groups=2)
    # sorted masses midpoints: 25 (g0), 65, 85, 92.5, 97.5 -> g1; zero-count item -> last group
    assert groups.tolist() == [0, 1, 1, 1, 1, 1]
    assert popularity_groups(np.array([10, 10, 10, 10]), 4).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs, message", [
    (dict(query_embeddings=np.zeros((2, 3)), candidate_embeddings=np.zeros((4, 2)), targets=np.array([0, 1])),
     r"must share d; got \(2, 3\) and \(4, 2\)"),
    (dict(query_embeddings=np.zeros((2, 2)), candidate_embeddings=np.zeros((4, 2)), targets=np.array([0])),
     r"targets has 1 rows but there are 2 queries"),
    (dict(query_embeddings=np.zeros((2, 2)), candidate_embeddings=np.zeros((4, 2)), targets=np.array([0, 7])),
     r"targets of query 1 holds item 7, outside the catalog \[0, 4\)"),
    (dict(query_embeddings=np.zeros((2, 2)), candidate_embeddings=np.zeros((4, 2)), targets=[[1], []]),
     r"query 1 has no target"),
    (dict(query_embeddings=np.full((1, 2), np.nan), candidate_embeddings=np.zeros((4, 2)), targets=np.array([0])),
     r"NaN or infinite"),
    (dict(query_embeddings=np.zeros((1, 2)), candidate_embeddings=np.zeros((4, 2)), targets=np.array([0]), ks=(0,)),
     r"cut-offs must be >= 1; got \[0\]"),
])
def test_bad_inputs(kwargs, message):
    with pytest.raises(DataError, match=message):
        evaluate_full_ranking(**kwargs)
