"""TIL's pure functions against NumPy: Student-t assignment, sharpened target, KL, states, η_u,
the look-ahead rows, the seen-item mask of BPR's negatives, K-means."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.losses.pairwise import interaction_keys, seen_negative_mask
from tfsoft.til import clustering
from tfsoft.til.lookahead import displace, gradient_rows
from tfsoft.til.states import interest_matrix, principal_interest, triplet_state


def student_t(points, centres, tau=1.0):
    distance = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
    kernel = (1 + distance / tau) ** (-(tau + 1) / 2)
    return kernel / kernel.sum(1, keepdims=True)


def sharpened(q):
    weight = q ** 2 / q.sum(0)
    return weight / weight.sum(1, keepdims=True)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_student_t_assignment_target_and_kl_match_numpy(rng, tau):
    points, centres = rng.normal(size=(9, 4)), rng.normal(size=(3, 4))
    q = student_t(points, centres, tau)
    got = clustering.student_t_assignment(tf.constant(points), tf.constant(centres), tau).numpy()
    np.testing.assert_allclose(got, q, rtol=1e-10)
    t = sharpened(q)
    np.testing.assert_allclose(clustering.sharpened_target(tf.constant(q)).numpy(), t, rtol=1e-10)
    np.testing.assert_allclose(clustering.clustering_loss(tf.constant(t), tf.constant(q)).numpy(),
                               (t * np.log(t / q)).sum(1).mean(), rtol=1e-10)
    valid = np.arange(9) > 0  # row 0 (OOV) counts neither in f_k nor in the mean
    t_valid = q ** 2 / q[valid].sum(0)
    t_valid /= t_valid.sum(1, keepdims=True)
    np.testing.assert_allclose(clustering.sharpened_target(tf.constant(q), tf.constant(valid)).numpy(), t_valid,
                               rtol=1e-10)
    np.testing.assert_allclose(clustering.clustering_loss(tf.constant(t), tf.constant(q), tf.constant(valid)).numpy(),
                               (t * np.log(t / q)).sum(1)[valid].mean(), rtol=1e-10)


def test_the_target_is_held_fixed_and_kl_pulls_points_to_their_centres(rng):
    points = tf.Variable(rng.normal(size=(6, 2)))
    centres = tf.constant([[0.0, 0.0], [5.0, 5.0]], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        q = clustering.student_t_assignment(points, centres)
        target = clustering.sharpened_target(q)
    assert tape.gradient(target, points) is None  # stop-gradient
    q = clustering.student_t_assignment(points, centres).numpy()
    t = sharpened(q)
    with tf.GradientTape() as tape:
        loss = clustering.clustering_loss(tf.constant(t), clustering.student_t_assignment(points, centres))
    moved = points.numpy() - 0.5 * tape.gradient(loss, points).numpy()
    after = clustering.clustering_loss(tf.constant(t), clustering.student_t_assignment(tf.constant(moved), centres))
    assert float(after) < float(loss)


def test_kmeans_recovers_separated_clusters(rng):
    points = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    start = clustering.initial_centres(tf.constant(points), 2, seed=0)
    centres, membership = clustering.kmeans(tf.constant(points), start, 10)
    assert len(set(membership.numpy()[:20])) == 1 and len(set(membership.numpy()[20:])) == 1
    np.testing.assert_allclose(np.sort(centres.numpy()[:, 0]), [points[:20, 0].mean(), points[20:, 0].mean()],
                               rtol=1e-6)


def test_states_match_numpy(rng):
    b, n, d = 3, 2, 4
    p, eta, qi = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(b, d))
    qj, mi, mj = rng.normal(size=(b, n, d)), rng.normal(size=(b, d)), rng.normal(size=(b, n, d))
    uni = triplet_state(*map(tf.constant, (p, eta, qi, qj))).numpy()
    for k in range(n):  # Eq. 5: (q_i⊙p_u + q_i⊙η_u) ‖ (q_j⊙p_u + q_j⊙η_u)
        np.testing.assert_allclose(uni[:, k], np.concatenate([qi * p + qi * eta, qj[:, k] * p + qj[:, k] * eta], 1))
    alpha = 0.3
    multi = triplet_state(*map(tf.constant, (p, eta, qi, qj, mi, mj)), alpha=alpha).numpy()
    for k in range(n):  # Eq. 6: each half adds α·(μ_c⊙p_u + μ_c⊙η_u)
        left = qi * p + qi * eta + alpha * (mi * p + mi * eta)
        right = qj[:, k] * p + qj[:, k] * eta + alpha * (mj[:, k] * p + mj[:, k] * eta)
        np.testing.assert_allclose(multi[:, k], np.concatenate([left, right], 1))
    items = rng.normal(size=(6, d)).astype(np.float32)  # Eq. 4: η_u, the mean of u's distinct training items
    matrix = interest_matrix([1, 1, 1, 3, 3, 3], [2, 4, 2, 1, 3, 5], 4, 6)
    eta = principal_interest(tf.constant(items), matrix, tf.constant([3, 2, 1, 3])).numpy()
    np.testing.assert_allclose(eta, [items[[1, 3, 5]].mean(0), np.zeros(d), items[[2, 4]].mean(0),
                                     items[[1, 3, 5]].mean(0)], rtol=1e-6)


def test_look_ahead_rows_sum_repeated_slices_and_drop_other_rows(rng):
    values = rng.normal(size=(4, 2))
    slices = tf.IndexedSlices(tf.constant(values), tf.constant([3, 1, 3, 7]), tf.constant([9, 2]))
    rows = gradient_rows(slices, tf.constant([1, 3], tf.int64), 9).numpy()
    np.testing.assert_allclose(rows, [values[1], values[0] + values[2]])
    dense = tf.convert_to_tensor(slices)
    np.testing.assert_allclose(gradient_rows(dense, tf.constant([1, 3], tf.int64), 9).numpy(), rows)
    table = rng.normal(size=(9, 2))
    step = displace(tf.constant([3, 1, 3]), slices, 0.5, 9)
    expected = table.copy()
    expected[[3, 1]] -= 0.5 * rows[::-1]
    np.testing.assert_allclose(step.dense(tf.constant(table)).numpy(), expected)
    np.testing.assert_allclose(step.gather(tf.constant(table)).numpy(), expected[[3, 1, 3]])


def test_bpr_negatives_mask_every_training_item_of_the_user():
    users, items = np.array([1, 1, 2, 3]), np.array([4, 5, 4, 9])
    keys = interaction_keys(tf.constant(users), tf.constant(items), 10)
    negatives = tf.constant([[4, 5, 6], [4, 5, 6], [9, 0, 4]])
    keep = seen_negative_mask(tf.constant([1, 2, 3]), negatives, keys, 10).numpy()
    np.testing.assert_array_equal(keep, [[False, False, True], [False, True, True], [False, True, True]])
    empty = seen_negative_mask(tf.constant([1]), tf.constant([[4]]), tf.zeros([0], tf.int64), 10).numpy()
    np.testing.assert_array_equal(empty, [[True]])
