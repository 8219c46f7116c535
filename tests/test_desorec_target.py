"""The ``desorec`` soft-target source (DeSoRec: label-propagation targets, decoupled loss)
against float64 NumPy references, its config section, and one tiny training run."""

import json
import shutil

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.config import load_config, parse_config
from tfsoft.data import Ragged
from tfsoft.data.sequences import next_item_examples
from tfsoft.errors import ConfigError
from tfsoft.losses.decoupled_objective import DecoupledSoftTargetLoss
from tfsoft.losses.objectives import SoftmaxObjective
from tfsoft.losses.softmax import CandidateLogits
from tfsoft.teachers import desorec
from tfsoft.teachers.desorec import DesorecTarget, NodeTargets, build_node_targets, node_keys

from tests.conftest import TINY_TRAINING

MASKED = -1e9


# ------------------------------------------------------------------------- NumPy references
def np_label_propagation(w, targets, num_items, alpha, iterations):
    q0 = np.eye(num_items)[targets]
    q = q0
    for _ in range(iterations):
        q = alpha * w @ q + (1 - alpha) * q0
    return q


def np_weights(x, beta, groups):
    """Dense W: softmax(−‖e_i − e_j‖/β) over the other members of i's group."""
    n = len(x)
    w = np.zeros((n, n))
    for i in range(n):
        others = [j for j in groups[i] if j != i]
        if others:
            logits = -np.linalg.norm(x[others] - x[i], axis=1) / beta
            w[i, others] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return w


def np_decoupled(logits, keep, positive, q_y, q_rest, lambda1, lambda2):
    """λ2·BCE(q_b, p_b) + (1 − λ2)·KL(q̂ ‖ p̂) per row over the kept columns; q̂ = 0 rows: no KL."""
    out = []
    for z, k, y, qy, qr in zip(logits, keep, positive, q_y, q_rest):
        z = np.where(k, z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        q_b = lambda1 * qy + 1 - lambda1
        binary = -(q_b * np.log(p[y]) + (1 - q_b) * np.log(1 - p[y]))
        rest = k.copy()
        rest[y] = False
        kl = 0.0
        if qr.sum() > 0:
            q_hat = qr / qr.sum()
            p_hat = np.where(rest, p, 0) / p[rest].sum()
            support = q_hat > 0
            kl = np.sum(q_hat[support] * (np.log(q_hat[support]) - np.log(p_hat[support])))
        out.append(lambda2 * binary + (1 - lambda2) * kl)
    return np.array(out)


# ------------------------------------------------------------------ offline: node targets
def test_knn_node_targets_equal_a_numpy_label_propagation(rng):
    n, items, k = 30, 7, 5
    x = rng.normal(size=(n, 4))
    targets = rng.integers(1, items, size=n)
    nodes = build_node_targets(np.arange(n), x, targets, graph="knn", beta=0.7, alpha=0.5, iterations=20,
                               num_neighbours=k, top_m=items)  # width 2·top_m ≥ items: exact
    assert nodes.graph == "knn"
    distance = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    neighbours = np.argsort(distance, axis=1)[:, :k]
    assert np.array_equal(np.sort(desorec.knn_neighbours(x, k), axis=1), np.sort(neighbours, axis=1))
    expected = np_label_propagation(np_weights(x, 0.7, neighbours), targets, items, 0.5, 20)
    np.testing.assert_allclose(nodes.dense(items), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nodes.probs.sum(axis=1), 1, rtol=1e-6)
    assert np.all(np.diff(nodes.item_ids, axis=1) >= 0)  # ids ascending per row (the runtime's lookup)


def test_cluster_node_targets_equal_a_numpy_label_propagation_inside_each_cluster(rng):
    """Two far-apart blobs: K-means finds them, W is dense inside each, q over the cluster's own targets."""
    n, items = 24, 6
    blob = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 3)) + 100.0 * blob[:, None]
    targets = rng.integers(1, items, size=n)
    nodes = build_node_targets(np.arange(n), x, targets, graph="cluster", beta=2.0, alpha=0.5, iterations=20,
                               num_clusters=2, top_m=items)
    assert nodes.graph == "cluster"
    clusters = desorec.kmeans(x, 2)
    assert len(set(zip(clusters, blob))) == 2  # the blobs, whatever their numbering
    groups = [np.flatnonzero(blob == blob[i]) for i in range(n)]
    expected = np_label_propagation(np_weights(x, 2.0, groups), targets, items, 0.5, 20)
    np.testing.assert_allclose(nodes.dense(items), expected, rtol=1e-6, atol=1e-9)


def test_cluster_propagation_with_given_clusters_and_a_singleton(rng):
    n, items = 9, 5
    x = rng.normal(size=(n, 2))
    targets = rng.integers(1, items, size=n)
    clusters = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2])  # node 8 alone: its target stays one-hot
    ids, probs = desorec.cluster_targets(x, targets, clusters, beta=1.0, alpha=0.5, iterations=3, top_m=items)
    got = NodeTargets(np.arange(n), ids, probs, "cluster").dense(items)
    groups = [np.flatnonzero(clusters == clusters[i]) for i in range(n)]
    expected = np_label_propagation(np_weights(x, 1.0, groups), targets, items, 0.5, 3)
    assert np.isclose(expected[8, targets[8]], 0.5)  # a row of W without neighbours: (1 − α)·q⁰ ...
    expected /= expected.sum(axis=1, keepdims=True)  # ... stored renormalised: one-hot, as the authors' self-loop
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got[8, targets[8]] == 1


def test_top_m_keeps_the_largest_entries_unrenormalised_and_the_target(rng):
    n, items = 40, 12
    x = rng.normal(size=(n, 3))
    targets = rng.integers(1, items, size=n)
    full = build_node_targets(np.arange(n), x, targets, graph="knn", num_neighbours=6, top_m=items, beta=1.0)
    top = build_node_targets(np.arange(n), x, targets, graph="knn", num_neighbours=6, top_m=3, beta=1.0)
    dense, kept = full.dense(items), top.dense(items)
    assert np.all(kept.sum(axis=1) <= 1 + 1e-6) and np.any(kept.sum(axis=1) < 0.99)  # the tail is cut, not spread
    rows = np.arange(n)
    assert np.all(kept[rows, targets] >= 0.5)  # q_y ≥ 1 − α: the target is always kept ...
    np.testing.assert_allclose(kept[rows, targets], dense[rows, targets], atol=0.02)  # ... with its value
    for row in range(n):  # the kept entries are (up to the propagation width's truncation) the largest
        third = np.sort(dense[row])[::-1][2]
        assert np.all(dense[row][kept[row] > 0] >= third - 0.02)


@pytest.mark.parametrize("num_items", [6, 1000])
def test_sparse_combine_by_accumulator_and_by_sorting_agree(rng, num_items):
    ids = rng.integers(-1, 6, size=(5, 9))
    probs = np.where(ids >= 0, rng.random((5, 9)), 0.0)
    got_ids, got = desorec._combine(ids, probs, 4, num_items)  # 6: accumulator; 1000: sorting
    for row in range(5):
        sums = np.bincount(ids[row][ids[row] >= 0], probs[row][ids[row] >= 0], minlength=6)
        best = np.sort(sums)[::-1][:4]
        np.testing.assert_allclose(np.sort(got[row])[::-1], best, rtol=1e-12)
        for item, value in zip(got_ids[row], got[row]):
            assert (item == -1 and value == 0) or np.isclose(sums[item], value)


def test_graph_auto_rule(monkeypatch):
    limit = desorec.AUTO_CLUSTER_MAX_NODES
    assert desorec.choose_graph("auto", limit) == "cluster"
    assert desorec.choose_graph("auto", limit + 1) == "knn"
    assert desorec.choose_graph("cluster", 10 ** 7) == "cluster" and desorec.choose_graph("knn", 3) == "knn"
    with pytest.raises(ConfigError, match="soft_target.graph"):
        desorec.choose_graph("dense", 3)
    x = np.random.default_rng(0).normal(size=(12, 2))
    assert build_node_targets(np.arange(12), x, np.arange(12) % 3 + 1, num_clusters=2, top_m=3).graph == "cluster"
    monkeypatch.setattr(desorec, "AUTO_MAX_CLUSTER_NODES", 5)  # a cluster too large for auto: knn
    assert build_node_targets(np.arange(12), x, np.arange(12) % 3 + 1, num_clusters=2, top_m=3).graph == "knn"
    monkeypatch.setattr(desorec, "MAX_CLUSTER_NODES", 5)  # ... and an error naming the key for graph: cluster
    with pytest.raises(ConfigError, match="soft_target.graph=knn"):
        build_node_targets(np.arange(12), x, np.arange(12) % 3 + 1, graph="cluster", num_clusters=2, top_m=3)


def test_equal_keys_are_one_node():
    x = np.array([[0.0], [1.0], [0.0], [5.0]])
    nodes = build_node_targets(np.array([7, 3, 7, 9]), x, np.array([1, 2, 1, 3]), graph="knn", num_neighbours=2,
                               top_m=3)
    assert nodes.keys.tolist() == [3, 7, 9]
    alone = build_node_targets(np.array([5]), np.zeros((1, 2)), np.array([3]), graph="knn", top_m=2)
    np.testing.assert_allclose(alone.dense(4), [[0, 0, 0, 1]])  # no neighbour: (1 − α)·q⁰ stored one-hot


# ------------------------------------------------------------------------------ node keys
def test_per_position_keys_follow_encode_order_and_match_position_mode():
    """A position of a sequence row has the key of the position-mode example with the same user,
    history and target (histories shorter than max_history), in encode's row-major order."""
    train = Ragged.from_rows([[1, 2, 3, 4], [5, 6], [2, 3, 4, 5, 6]])
    users = np.array([10, 11, 12])
    per_position = next_item_examples(train, users, 5, mode="user")
    position = next_item_examples(train, users, 5, mode="position")
    keys = node_keys({name: tf.constant(v) for name, v in per_position.as_features().items()}).numpy()
    expected = node_keys({name: tf.constant(v) for name, v in position.as_features().items()}).numpy()
    flat_targets = per_position.target[per_position.target != 0]
    assert np.array_equal(flat_targets, position.target)  # same examples, same order
    assert np.array_equal(keys, expected)
    assert len(set(keys.tolist())) == len(keys)


# ------------------------------------------------------------------------------ runtime
class Context:
    def __init__(self, features):
        self.features = {name: tf.constant(v) for name, v in features.items()}


def _source_and_features():
    """Four examples (position mode) whose nodes hold known sparse targets over items 1..7; row 3's
    node is unknown."""
    features = {"user": np.array([1, 2, 3, 4]), "history": np.array([[0, 1], [1, 2], [2, 3], [3, 4]]),
                "target": np.array([2, 5, 3, 7])}
    keys = node_keys({k: tf.constant(v) for k, v in features.items()}).numpy()[:3]
    q = np.zeros((3, 8))
    q[0, [2, 1, 4, 6]] = [0.6, 0.2, 0.15, 0.05]
    q[1, [5, 3]] = [0.7, 0.3]
    q[2, [3, 1]] = [0.55, 0.45]
    order = np.argsort(keys)
    ids = np.zeros((3, 4), np.int64)
    probs = np.zeros((3, 4))
    for row, node in enumerate(order):
        support = np.flatnonzero(q[node])
        ids[row, -len(support):], probs[row, -len(support):] = support, q[node, support]
    nodes = NodeTargets(keys[order], ids, probs.astype(np.float32), "knn")
    return DesorecTarget.from_nodes(nodes), features, q


def _full_scored(rng, features, num_items=8):
    logits = rng.normal(size=(4, num_items))
    logits[:, 0] = MASKED  # the OOV column
    return CandidateLogits(tf.constant(logits), tf.constant(features["target"], tf.int32), tf.range(num_items))


def test_runtime_targets_on_the_full_catalog_are_the_stored_distributions(rng):
    source, features, q = _source_and_features()
    scored = _full_scored(rng, features)
    target = source.target(scored, Context(features)).numpy()
    np.testing.assert_allclose(target[:3], q, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(target[3], np.eye(8)[7])  # unknown node: onehot(y)
    q_y, rest = (t.numpy() for t in source.parts(scored, Context(features)))
    np.testing.assert_allclose(q_y, [0.6, 0.7, 0.55, 1.0], rtol=1e-6)
    np.testing.assert_allclose(rest[0], np.r_[0, 0.2, 0, 0, 0.15, 0, 0.05, 0] / 0.4, rtol=1e-6)


def test_runtime_targets_on_sampled_candidates_with_log_q_and_masks(rng):
    """[N, C] candidate ids (positive first), logQ correction, a masked accidental hit: q̂ is the
    self-normalised restriction of the non-target part; q_y stays the stored value."""
    source, features, q = _source_and_features()
    ids = np.array([[2, 1, 4, 2, 5], [5, 1, 2, 4, 6], [3, 1, 1, 7, 6], [7, 2, 3, 4, 5]])
    log_count = rng.normal(size=(4, 5))
    log_count[:, 0] = 0.0
    keep = np.ones((4, 5), bool)
    keep[0, 3] = False  # accidental hit of the positive
    keep[2, 2] = False  # a duplicate negative
    logits = np.where(keep, rng.normal(size=(4, 5)), MASKED)
    scored = CandidateLogits(tf.constant(logits), tf.zeros(4, tf.int32), tf.constant(ids), tf.constant(log_count))
    target = source.target(scored, Context(features)).numpy()
    q_y, rest = (t.numpy() for t in source.parts(scored, Context(features)))
    for row in range(3):
        y = features["target"][row]
        weight = np.where(keep[row] & (ids[row] != y), q[row, ids[row]] / np.exp(log_count[row]), 0.0)
        expected_rest = weight / weight.sum() if weight.sum() > 0 else weight
        np.testing.assert_allclose(rest[row], expected_rest, rtol=1e-6, atol=1e-9)
        assert np.isclose(q_y[row], q[row, y])
        if weight.sum() > 0:
            np.testing.assert_allclose(target[row], q[row, y] * np.eye(5)[0] + (1 - q[row, y]) * expected_rest,
                                       rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(target.sum(axis=1), 1, rtol=1e-6)
    assert np.all(target[~keep] == 0) and np.all(target >= 0)
    # row 1 (q̂ on item 3 only) has no support among 1, 2, 4, 6: all mass on y in the target
    assert rest[1].sum() == 0 and target[1, 0] == 1


class Fixed(SoftmaxObjective):
    """A softmax objective whose candidate logits are given."""

    def __init__(self, scored):
        object.__setattr__(self, "scored", scored)

    def candidate_logits(self, query, positive, positive_ids, source):
        return self.scored


def test_decoupled_loss_over_the_full_catalog_equals_numpy_and_the_papers_formula(rng):
    source, features, q = _source_and_features()
    scored = _full_scored(rng, features)
    loss = DecoupledSoftTargetLoss(Fixed(scored), source, lambda1=0.3, lambda2=0.7)
    got = loss.per_example(None, None, None, Context(features)).numpy()
    keep = np.arange(8) > 0
    q_full = np.vstack([q, np.eye(8)[7]])
    y = features["target"]
    rest = q_full * (1 - np.eye(8)[y])
    expected = np_decoupled(scored.logits.numpy(), np.tile(keep, (4, 1)), y, q_full[np.arange(4), y], rest, 0.3, 0.7)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_decoupled_loss_on_sampled_candidates_and_the_no_support_case(rng):
    """Row 1's q̂ (item 3) is not among its candidates: the KL term is dropped and the loss is
    λ2·BCE with the stored q_y = 0.7 (not the restricted value 1). Row 3's node is unknown: λ2·CE."""
    source, features, q = _source_and_features()
    ids = np.array([[2, 1, 4, 6, 5], [5, 1, 2, 4, 6], [3, 1, 2, 7, 6], [7, 2, 3, 4, 5]])
    log_count = np.c_[np.zeros(4), rng.normal(size=(4, 4))]
    logits = rng.normal(size=(4, 5)) - log_count
    scored = CandidateLogits(tf.constant(logits), tf.zeros(4, tf.int32), tf.constant(ids), tf.constant(log_count))
    got = DecoupledSoftTargetLoss(Fixed(scored), source, 0.3, 0.7).per_example(None, None, None,
                                                                              Context(features)).numpy()
    keep = np.ones((4, 5), bool)
    q_y = np.array([0.6, 0.7, 0.55, 1.0])
    rest = np.zeros((4, 5))
    for row in range(3):
        rest[row, 1:] = q[row, ids[row, 1:]] / np.exp(log_count[row, 1:])
    assert rest[1].sum() == 0
    np.testing.assert_allclose(got, np_decoupled(logits, keep, np.zeros(4, int), q_y, rest, 0.3, 0.7), rtol=1e-6)
    p_y = np.exp(logits[1, 0] - np.log(np.exp(logits[1]).sum()))
    q_b = 0.3 * 0.7 + 0.7
    np.testing.assert_allclose(got[1], 0.7 * -(q_b * np.log(p_y) + (1 - q_b) * np.log(1 - p_y)), rtol=1e-6)
    ce = -(logits[3, 0] - np.log(np.exp(logits[3]).sum()))
    np.testing.assert_allclose(got[3], 0.7 * ce, rtol=1e-6)


def test_decoupled_loss_refuses_a_pairwise_base_and_bad_lambdas():
    from tfsoft.losses.objectives import BPR, FullSoftmax

    with pytest.raises(ConfigError, match="softmax loss"):
        DecoupledSoftTargetLoss(BPR(), None)
    with pytest.raises(ConfigError, match="soft_target.lambda2"):
        DecoupledSoftTargetLoss(FullSoftmax(), None, lambda2=0.0)


# ------------------------------------------------------------------------ config and run
def test_desorec_section_validation():
    section = parse_config({"soft_target": {"name": "desorec", "teacher_runs": ["base"]}}).soft_target
    assert (section.lambda1, section.lambda2, section.propagation_alpha, section.iterations, section.beta,
            section.graph, section.num_clusters, section.checkpoint) == (0.3, 0.7, 0.5, 20, 2.0, "auto", 16, "best")
    assert section.teacher_runs_used() == ["base"]
    for raw, key in [({"teacher_runs": ["a", "b"]}, "soft_target.teacher_runs"), ({}, "soft_target.teacher_runs"),
                     ({"teacher_runs": ["a"], "lambda1": 0}, "soft_target.lambda1"),
                     ({"teacher_runs": ["a"], "lambda2": 1.5}, "soft_target.lambda2"),
                     ({"teacher_runs": ["a"], "graph": "dense"}, "soft_target.graph"),
                     ({"teacher_runs": ["a"], "top_m": 0}, "soft_target.top_m"),
                     ({"teacher_runs": ["a"], "beta": 0}, "soft_target.beta"),
                     ({"teacher_runs": ["a"], "alpha": 0.5}, "propagation_alpha")]:
        with pytest.raises(ConfigError, match=key):
            parse_config({"soft_target": {"name": "desorec", **raw}})


BASE = list(TINY_TRAINING)


@pytest.fixture
def base_run(tiny_run):
    return tiny_run


def test_a_student_trains_with_desorec_records_the_base_and_evaluates_without_it(base_run, tmp_path):
    from tfsoft.loaded_run import evaluate_run
    from tfsoft.train_run import train_run

    config = load_config("configs/lastfm_in_batch.yaml",
                         [*BASE, "soft_target=desorec", f"soft_target.teacher_runs=['{base_run}']",
                          "soft_target.graph=knn", "soft_target.num_neighbours=4", "soft_target.iterations=3",
                          "soft_target.top_m=4"])
    student = tmp_path / "student"
    metrics = train_run(config, student)
    assert np.isfinite(metrics["test"]["ndcg@10"])
    record = json.loads((student / "teachers.json").read_text())["teachers"]
    assert record[0]["run"] == str(base_run.resolve())
    moved = tmp_path / "base_gone"
    shutil.copytree(base_run, moved)
    shutil.rmtree(base_run)
    try:
        again = evaluate_run(student)  # evaluation (and export) build no desorec state
    finally:
        shutil.copytree(moved, base_run)
    assert again["test"]["ndcg@10"] == metrics["test"]["ndcg@10"]
