"""Full-ranking evaluator against a slow, explicit NumPy reference and hand-computed cases."""

import json
import math

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import DataError
from tfsoft.evaluation import (
    EvaluationResult,
    _compiled_ranker,
    dot_product,
    evaluate_full_ranking,
    popularity_groups,
)

KS = (1, 3, 5, 10)


def reference(query, catalog, targets, exclude=None, ks=KS, valid=None, groups=None, num_groups=10):
    """Metrics by the definition, one query and one item at a time (float64 scores).

    rank(t) = 1 + #{rankable non-target j : s_j >= s_t} + #{rankable targets before t}, targets
    ordered by score descending, equal scores by item index. Returns (metrics, long tail)."""
    query, catalog = np.asarray(query, np.float64), np.asarray(catalog, np.float64)
    num_items = len(catalog)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "mrr", "hit_rate")}
    tail = {k: np.zeros(num_groups) for k in ks}
    for q in range(len(query)):
        own = sorted({int(t) for t in np.atleast_1d(targets[q])})
        scores = catalog @ query[q]
        banned = set() if exclude is None else {int(e) for e in np.atleast_1d(exclude[q])} - set(own)
        rankable = [j for j in range(num_items) if j not in banned and (valid is None or valid[j])]
        ordered = sorted((t for t in own if t in rankable), key=lambda t: -scores[t])  # stable: by index
        ranks = {}
        for position, t in enumerate(ordered):
            ahead = sum(1 for j in rankable if j not in own and scores[j] >= scores[t])
            ranks[t] = 1 + ahead + position
        best = min(ranks.values(), default=math.inf)
        for k in ks:
            hits = [t for t, r in ranks.items() if r <= k]
            sums[f"recall@{k}"] += len(hits) / len(own)
            sums[f"hit_rate@{k}"] += 1.0 if hits else 0.0
            sums[f"mrr@{k}"] += 1 / best if best <= k else 0.0
            ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(own), k) + 1))
            sums[f"ndcg@{k}"] += sum(1 / math.log2(ranks[t] + 1) for t in hits) / ideal
            if groups is not None:
                for t in hits:
                    tail[k][groups[t]] += 1 / len(own)
    metrics = {name: value / len(query) for name, value in sums.items()}
    return metrics, {k: tail[k] / len(query) for k in ks}


def assert_metrics(result, expected):
    assert set(result.metrics) == set(expected)
    for name, value in expected.items():
        assert result.metrics[name] == pytest.approx(value, abs=1e-12), name


def random_case(seed, num_queries, num_items, dim, *, integer=False, max_targets=1):
    """Random embeddings; ``integer=True`` uses small integers so that scores are exact in
    float32 and ties (between targets and non-targets) are frequent."""
    rng = np.random.default_rng(seed)
    if integer:
        query = rng.integers(-2, 3, size=(num_queries, dim)).astype(np.float32)
        catalog = rng.integers(-2, 3, size=(num_items, dim)).astype(np.float32)
    else:
        query = rng.normal(size=(num_queries, dim)).astype(np.float32)
        catalog = rng.normal(size=(num_items, dim)).astype(np.float32)
    if max_targets == 1:
        targets = rng.integers(0, num_items, size=num_queries)
    else:
        targets = [rng.choice(num_items, size=rng.integers(1, max_targets + 1), replace=False)
                   for _ in range(num_queries)]
    return rng, query, catalog, targets


# --- against the NumPy reference ---------------------------------------------------------


@pytest.mark.parametrize("integer", [False, True], ids=["continuous", "tied"])
def test_single_target_matches_reference(integer):
    _, query, catalog, targets = random_case(1, 23, 40, 4, integer=integer)
    ks = (*KS, 40, 50)  # K = N and K > N: every target is a hit
    result = evaluate_full_ranking(query, catalog, targets, ks=ks)
    assert_metrics(result, reference(query, catalog, targets, ks=ks)[0])
    assert result.num_queries == 23 and result.long_tail_recall is None
    assert result.metrics["recall@40"] == 1 and result.metrics["recall@50"] == 1


@pytest.mark.parametrize("integer", [False, True], ids=["continuous", "tied"])
def test_ragged_multi_target_matches_reference(integer):
    _, query, catalog, targets = random_case(2, 31, 40, 3, integer=integer, max_targets=7)
    targets[3] = np.concatenate([targets[3], targets[3][:1]])  # duplicates count once
    result = evaluate_full_ranking(query, catalog, targets, ks=KS)
    assert_metrics(result, reference(query, catalog, targets)[0])


def test_exclusion_matches_reference_and_never_removes_a_target():
    rng, query, catalog, targets = random_case(3, 19, 30, 3, integer=True, max_targets=5)
    exclude = [rng.choice(30, size=rng.integers(0, 10), replace=False) for _ in range(19)]
    exclude[0] = np.concatenate([exclude[0], targets[0]])  # every target of query 0 listed as seen
    ks = (*KS, 30)
    result = evaluate_full_ranking(query, catalog, targets, exclude=exclude, ks=ks)
    assert_metrics(result, reference(query, catalog, targets, exclude, ks=ks)[0])
    assert result.metrics["recall@30"] == 1  # excluded items never push a target out of the catalog

    # a target listed in exclude stays rankable: exact same result as not listing it
    q, c = np.array([[1.0]]), np.array([[3.0], [2.0], [1.0]])
    listed = evaluate_full_ranking(q, c, [np.array([1])], exclude=[np.array([0, 1])], ks=(1,))
    assert listed.metrics["recall@1"] == 1  # item 0 excluded, target 1 kept -> rank 1


def test_valid_items_mask_matches_reference():
    _, query, catalog, targets = random_case(4, 21, 30, 3, max_targets=4)
    valid = np.ones(30, dtype=bool)
    valid[[0, 7, 11]] = False
    targets[0] = np.array([0, 5])  # an invalid target can never be ranked: a miss
    ks = (*KS, 30)  # K = N: the invalid target is still a miss
    result = evaluate_full_ranking(query, catalog, targets, ks=ks, valid_items=valid)
    assert_metrics(result, reference(query, catalog, targets, ks=ks, valid=valid)[0])
    assert result.metrics["recall@30"] < 1
    # index 0 (e.g. OOV) with the best score of all never takes a place in the ranking
    q, c = np.array([[1.0]]), np.array([[9.0], [2.0], [1.0]])
    masked = evaluate_full_ranking(q, c, np.array([1]), ks=(1,), valid_items=np.array([False, True, True]))
    assert masked.metrics["mrr@1"] == 1


def test_everything_together_across_ragged_batches_and_long_tail():
    rng, query, catalog, targets = random_case(5, 37, 50, 4, integer=True, max_targets=6)
    exclude = [rng.choice(50, size=rng.integers(0, 12), replace=False) for _ in range(37)]
    exclude[1] = np.concatenate([exclude[1], targets[1][:1]])
    valid = rng.random(50) > 0.1
    counts = rng.integers(0, 40, size=50)
    groups = popularity_groups(counts)
    expected, tail = reference(query, catalog, targets, exclude, valid=valid, groups=groups)
    results = [evaluate_full_ranking(query, catalog, targets, exclude=exclude, ks=KS, item_counts=counts,
                                     batch_size=batch, valid_items=valid) for batch in (None, 1, 8, 36)]
    for result in results:  # 1, 5 (ragged last batch of 5), 2 and 37 batches: same numbers
        assert_metrics(result, expected)
        for k in KS:
            assert len(result.long_tail_recall[k]) == 10
            np.testing.assert_allclose(result.long_tail_recall[k], tail[k], atol=1e-12)
            assert sum(result.long_tail_recall[k]) == pytest.approx(result.metrics[f"recall@{k}"], abs=1e-12)


def test_score_fn_and_tensor_inputs():
    _, query, catalog, targets = random_case(6, 12, 25, 5, max_targets=3)

    def cosine(q, c):
        return tf.matmul(tf.math.l2_normalize(q, axis=1), tf.math.l2_normalize(c, axis=1), transpose_b=True)

    normalised = (query / np.linalg.norm(query, axis=1, keepdims=True),
                  catalog / np.linalg.norm(catalog, axis=1, keepdims=True))
    result = evaluate_full_ranking(tf.constant(query), tf.constant(catalog), targets, ks=KS, score_fn=cosine)
    assert_metrics(result, reference(*normalised, targets)[0])
    single = evaluate_full_ranking(tf.constant(query), catalog, tf.constant(np.arange(12)), ks=KS)
    assert_metrics(single, reference(query, catalog, np.arange(12))[0])


def test_one_trace_for_every_batch_shape():
    _, query, catalog, targets = random_case(7, 10, 20, 3, max_targets=4)
    evaluate_full_ranking(query, catalog, targets, ks=(5,), batch_size=3)
    traces = _compiled_ranker(dot_product).experimental_get_tracing_count()
    evaluate_full_ranking(query[:7], catalog[:15], [t % 15 for t in targets[:7]], ks=(2, 9), batch_size=4,
                          exclude=[np.array([1, 2, 3])] * 7)
    evaluate_full_ranking(query, catalog, np.arange(10), ks=(5,))
    assert _compiled_ranker(dot_product).experimental_get_tracing_count() == traces


# --- hand-computed cases -------------------------------------------------------------------


def test_perfect_model_scores_one():
    catalog = np.eye(6)
    single = evaluate_full_ranking(np.eye(6)[[2, 4]], catalog, np.array([2, 4]), ks=(1, 3))
    assert all(value == 1 for value in single.metrics.values())
    # two targets scored 1 (above every other item): ranks 1 and 2, ideal DCG reached
    multi = evaluate_full_ranking(np.array([[1, 1, 0, 0, 0, 0.0]]), catalog, [np.array([0, 1])], ks=(2, 5))
    assert all(value == pytest.approx(1) for value in multi.metrics.values())
    assert multi.metrics["recall@2"] == 1 and multi.metrics["ndcg@2"] == pytest.approx(1)


def test_constant_scores_earn_nothing():
    catalog, query = np.ones((10, 2)), np.ones((3, 2))
    result = evaluate_full_ranking(query, catalog, np.array([0, 5, 9]), ks=(1, 5, 9))
    assert all(value == 0 for value in result.metrics.values())
    multi = evaluate_full_ranking(query, catalog, [[0, 1], [4], [2, 3, 9]], ks=(7,))
    assert all(value == 0 for value in multi.metrics.values())  # 7 < 10 - 2 non-targets ahead
    full = evaluate_full_ranking(query, catalog, np.array([0, 5, 9]), ks=(10,))
    assert full.metrics["recall@10"] == 1 and full.metrics["mrr@10"] == pytest.approx(0.1)  # rank N


def test_ties_by_hand():
    # scores: item0=3, item1=2, item2=2, item3=2, item4=1
    catalog, query = np.array([[3.0], [2.0], [2.0], [2.0], [1.0]]), np.array([[1.0]])
    # one target (item 2) tied with items 1 and 3: both count ahead -> rank 1 + 3 = 4
    one = evaluate_full_ranking(query, catalog, np.array([2]), ks=(3, 4))
    assert one.metrics["recall@3"] == 0 and one.metrics["recall@4"] == 1
    assert one.metrics["mrr@4"] == pytest.approx(1 / 4)
    assert one.metrics["ndcg@4"] == pytest.approx(1 / math.log2(5))
    # targets 1 and 2 tied with non-target 3: rank(1) = 1 + 2 (items 0, 3) + 0 = 3, rank(2) = 1 + 2 + 1 = 4
    two = evaluate_full_ranking(query, catalog, [np.array([2, 1])], ks=(2, 3, 4))
    m = two.metrics
    assert (m["recall@2"], m["recall@3"], m["recall@4"]) == (0, 0.5, 1)
    assert (m["hit_rate@2"], m["hit_rate@3"]) == (0, 1)
    assert m["mrr@3"] == pytest.approx(1 / 3) and m["mrr@4"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    # excluding the tied non-target 3 moves both targets up by one
    up = evaluate_full_ranking(query, catalog, [np.array([1, 2])], exclude=[np.array([3])], ks=(2, 3))
    assert (up.metrics["recall@2"], up.metrics["recall@3"], up.metrics["mrr@2"]) == (0.5, 1, 0.5)


def test_popularity_groups_by_hand():
    counts = np.array([50, 30, 10, 5, 5, 0])  # total 100; sorted midpoints 25, 65, 85, 92.5, 97.5
    assert popularity_groups(counts, num_groups=2).tolist() == [0, 1, 1, 1, 1, 1]
    # 10 groups: midpoint / 100 * 10 -> 2.5, 6.5, 8.5, 9.25, 9.75; zero count -> last group
    assert popularity_groups(counts, num_groups=10).tolist() == [2, 6, 8, 9, 9, 9]
    assert popularity_groups(np.array([10, 10, 10, 10]), 4).tolist() == [0, 1, 2, 3]  # ties: by index
    assert popularity_groups(np.array([0, 40, 0, 40, 20]), 5).tolist() == [4, 1, 4, 3, 4]
    assert popularity_groups(np.zeros(3, dtype=int), 10).tolist() == [9, 9, 9]
    counts = np.random.default_rng(0).integers(1, 50, size=1000)
    groups = popularity_groups(counts)
    order = np.argsort(-counts, kind="stable")
    assert groups.dtype == np.int64 and (np.diff(groups[order]) >= 0).all()  # popular first
    mass = np.bincount(groups, weights=counts, minlength=10) / counts.sum()
    np.testing.assert_allclose(mass, 0.1, atol=50 / counts.sum())  # equal mass, up to one item


def test_long_tail_by_hand():
    # items 0..3 counts 30/30/20/20 -> 2 groups {0, 1} and {2, 3}; query 0 hits item 0 and item 2 (of 3 targets)
    catalog = np.eye(4)
    query = np.array([[3.0, 0, 2, 1], [0, 0, 1, 0]])
    result = evaluate_full_ranking(query, catalog, [np.array([0, 2, 1]), np.array([2])], ks=(2,),
                                   item_counts=np.array([30, 30, 20, 20]), num_groups=2)
    # query 0: ranks 0 -> 1, 2 -> 2, 1 -> 4 (item 3 ahead): (1/3, 1/3); query 1: item 2 rank 1 -> (0, 1)
    assert result.long_tail_recall[2] == pytest.approx([(1 / 3) / 2, (1 / 3 + 1) / 2])
    assert result.metrics["recall@2"] == pytest.approx((2 / 3 + 1) / 2)


def test_to_dict_is_json_friendly():
    result = evaluate_full_ranking(np.eye(3), np.eye(3), np.arange(3), ks=(2, 1, 2), item_counts=np.array([3, 2, 1]))
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["num_queries"] == 3 and set(payload["long_tail_recall"]) == {"1", "2"}
    assert list(result.metrics) == ["recall@1", "ndcg@1", "mrr@1", "hit_rate@1",
                                    "recall@2", "ndcg@2", "mrr@2", "hit_rate@2"]
    no_tail = EvaluationResult(metrics={"recall@1": 0.5}, num_queries=2)
    assert no_tail.to_dict() == {"metrics": {"recall@1": 0.5}, "num_queries": 2}


# --- bad input ------------------------------------------------------------------------------

Q2, N4 = np.zeros((2, 2)), np.zeros((4, 2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(query_embeddings=np.zeros(2), candidate_embeddings=N4, targets=np.array([0])),
     r"query_embeddings must be a 2-D float array \[rows, d\]; got shape \(2,\)"),
    (dict(query_embeddings=np.zeros((2, 3)), candidate_embeddings=N4, targets=np.array([0, 1])),
     r"same d; got shapes \(2, 3\) and \(4, 2\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=np.zeros((0, 2)), targets=np.array([0, 1])),
     r"at least one query and one candidate; .* candidate_embeddings \(0, 2\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0])),
     r"targets has 1 entries; expected one per query, 2"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=[[0], [1], [2]]),
     r"targets has 3 rows; expected one per query, 2"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 7])),
     r"targets of query 1 is item 7, outside the catalog \[0, 4\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=[[1], [2, -1]]),
     r"targets of query 1 holds item -1, outside the catalog \[0, 4\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=[[1], [0.5]]),
     r"targets of query 1 must be integer item indices; got dtype float64"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=[[1], []]),
     r"query 1 has no target"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), exclude=[[0], [9]]),
     r"exclude of query 1 holds item 9, outside the catalog \[0, 4\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), exclude=[[0]]),
     r"exclude has 1 rows; expected one per query, 2"),
    (dict(query_embeddings=np.array([[0.0, np.nan]]), candidate_embeddings=N4, targets=np.array([0])),
     r"query_embeddings contains NaN or infinite values \(1 entries, first at row 0, column 1: nan\)"),
    (dict(query_embeddings=Q2, candidate_embeddings=np.full((4, 2), np.inf), targets=np.array([0, 1])),
     r"candidate_embeddings contains NaN or infinite values"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), ks=(10, 0)),
     r"every cut-off K in ks must be an integer >= 1; got \[10, 0\]"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), ks=(-3,)),
     r"must be an integer >= 1; got \[-3\]"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), ks=()),
     r"ks must hold at least one cut-off"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), valid_items=np.ones(3, bool)),
     r"valid_items must be a bool array of shape \(4,\) .* got shape \(3,\), dtype bool"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), item_counts=np.ones(5)),
     r"item_counts has 5 entries; expected one per candidate, 4"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), item_counts=np.array([1, -2, 0, 0])),
     r"item_counts must be finite and non-negative; item 1 has count -2"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]), batch_size=0),
     r"batch_size must be an integer >= 1; got 0"),
    (dict(query_embeddings=Q2, candidate_embeddings=N4, targets=np.array([0, 1]),
          score_fn=lambda q, c: tf.matmul(q, c, transpose_b=True) / 0.0),
     r"the scores of query 0 contain NaN or infinite values"),
])
def test_bad_inputs(kwargs, message):
    with pytest.raises(DataError, match=message):
        evaluate_full_ranking(**kwargs)


@pytest.mark.parametrize("counts, groups, message", [
    (np.ones((2, 2)), 10, r"item_counts must be a 1-D numeric array \[N\]; got shape \(2, 2\)"),
    (np.array([1.0, np.nan]), 10, r"item 1 has count nan"),
    (np.ones(3), 0, r"num_groups must be an integer >= 1; got 0"),
])
def test_popularity_groups_bad_inputs(counts, groups, message):
    with pytest.raises(DataError, match=message):
        popularity_groups(counts, groups)
