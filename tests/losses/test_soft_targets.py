"""tfsoft.losses.soft_targets against small NumPy references (float64)."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses import soft_targets as st


def t(x):
    return tf.constant(x)


def np_softmax(z, keep=None):
    z = np.where(np.ones_like(z, dtype=bool) if keep is None else keep, z, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_entropy(d):
    return -np.sum(np.where(d > 0, d * np.log(np.where(d > 0, d, 1)), 0), axis=-1)


def gradient(function, array):
    variable = tf.Variable(array)
    with tf.GradientTape() as tape:
        value = function(variable)
        total = tf.reduce_sum(value)
    return value.numpy(), tape.gradient(total, variable).numpy()


@pytest.fixture
def problem(rng):
    """B = 4 rows over C = 6 candidates: student logits, target logits, logQ, mask (col 5 of row 1 masked)."""
    b, c = 4, 6
    keep = np.ones((b, c), dtype=bool)
    keep[1, 5] = keep[2, 0] = False
    return dict(student=rng.normal(size=(b, c)), teacher=rng.normal(size=(b, c)) * 2,
                log_count=rng.normal(size=(b, c)), keep=keep, positive=np.array([0, 3, 1, 5]))


def test_restricted_target_is_the_corrected_renormalised_softmax(problem):
    keep, teacher, log_count = problem["keep"].copy(), problem["teacher"], problem["log_count"]
    keep[3] = False  # an empty candidate row: zeros, no NaN
    d = st.restricted_target(t(teacher), t(log_count), t(keep)).numpy()
    expected = np_softmax(teacher[:3] - log_count[:3], keep[:3])
    np.testing.assert_allclose(d[:3], expected, rtol=1e-12)
    assert np.all(d >= 0) and np.all(d[~keep] == 0) and np.all(d[3] == 0)
    np.testing.assert_allclose(d[:3].sum(axis=1), 1, rtol=1e-12)
    shared = st.restricted_target(t(teacher[0]), mask=t(keep[2])).numpy()  # [C] inputs: [C] output
    np.testing.assert_allclose(shared, np_softmax(teacher[0], keep[2]), rtol=1e-12)
    with_minus_inf = st.restricted_target(t(np.array([[-np.inf, 0.0, np.log(3.0)]]))).numpy()
    np.testing.assert_allclose(with_minus_inf, [[0, 0.25, 0.75]], rtol=1e-12)


@pytest.mark.parametrize("weight", [0.5, 0.7, 1.0])
def test_mix_with_onehot_is_a_distribution_with_argmax_y(weight, problem):
    d = st.restricted_target(t(problem["teacher"]), t(problem["log_count"]), t(problem["keep"]))
    mixed = st.mix_with_onehot(d, t(problem["positive"]), weight).numpy()
    onehot = np.eye(6)[problem["positive"]]
    np.testing.assert_allclose(mixed, weight * onehot + (1 - weight) * d.numpy(), rtol=1e-12)
    np.testing.assert_allclose(mixed.sum(axis=1), 1, rtol=1e-12)
    assert np.all(mixed[~problem["keep"]] == 0)
    assert np.array_equal(mixed.argmax(axis=1), problem["positive"])


def test_label_smoothing_and_popularity_targets():
    uniform = st.restricted_target(st.uniform_target_logits(5, tf.float64)[tf.newaxis, :])
    smoothed = st.mix_with_onehot(uniform, t(np.array([2])), 0.9).numpy()
    np.testing.assert_allclose(smoothed, [[0.02, 0.02, 0.92, 0.02, 0.02]], rtol=1e-12)
    counts = np.array([0.0, 3.0, 10.0, 1.0])
    np.testing.assert_allclose(st.popularity_target_logits(t(counts), 2.0, "log").numpy(), np.log1p(counts) / 2)
    csrec = st.popularity_target_logits(t(counts), 2.0, "csrec").numpy()
    np.testing.assert_allclose(csrec, 5 * (2 * counts / 10.0 - 1) / 2)
    np.testing.assert_allclose(st.popularity_target_logits(t(np.array([2, 6])), 1.0, "csrec").numpy(), [-2.5, 2.5])


def test_soft_term_is_cross_entropy_target_to_model_with_gradient_p_minus_d(problem):
    keep, positive = problem["keep"], problem["positive"]
    d = st.restricted_target(t(problem["teacher"]), mask=t(keep)).numpy()
    loss, grad = gradient(lambda z: st.soft_target_loss(z, t(positive), t(d), 1.0, student_mask=t(keep)),
                          problem["student"])
    p = np_softmax(problem["student"], keep)
    log_p = np.log(np.where(keep, p, 1))
    np.testing.assert_allclose(loss, -np.sum(d * log_p, axis=1), rtol=1e-10)
    np.testing.assert_allclose(grad, p - d, atol=1e-12)  # H(d, p) and KL(d ‖ p), not KL(p ‖ d)
    kl = st.soft_target_kl(t(problem["student"]), t(d), t(keep)).numpy()
    np.testing.assert_allclose(kl, -np.sum(d * log_p, axis=1) - np_entropy(d), rtol=1e-10)
    mixed = st.soft_target_loss(t(problem["student"]), t(positive), t(d), 0.3, student_mask=t(keep)).numpy()
    hard = -log_p[np.arange(4), positive]
    np.testing.assert_allclose(mixed, 0.7 * hard + 0.3 * -np.sum(d * log_p, axis=1), rtol=1e-10)


def test_frozen_student_as_teacher_gives_the_students_entropy(problem):
    p = np_softmax(problem["student"], problem["keep"])
    loss, grad = gradient(
        lambda z: st.soft_target_loss(z, t(problem["positive"]), t(p), 1.0, student_mask=t(problem["keep"])),
        problem["student"])
    np.testing.assert_allclose(loss, np_entropy(p), rtol=1e-10)
    np.testing.assert_allclose(grad, 0, atol=1e-12)
    np.testing.assert_allclose(st.soft_target_kl(t(problem["student"]), t(p), t(problem["keep"])), 0, atol=1e-12)


def test_student_temperature_rescales_before_log_q_and_multiplies_by_ratio_squared(problem):
    z, log_count, keep, positive = problem["student"], problem["log_count"], problem["keep"], problem["positive"]
    d = st.restricted_target(t(problem["teacher"] / 3.0), t(log_count), t(keep)).numpy()
    got = st.soft_target_loss(t(z), t(positive), t(d), 0.4, student_mask=t(keep), student_temperature=0.3,
                              base_temperature=0.1, student_log_expected_count=t(log_count)).numpy()
    # z = s/τ with τ = 0.1; the soft term uses s/T − logQ with T = 0.3 and the factor (T/τ)² = 9.
    log_p_soft = np.log(np.where(keep, np_softmax(z * 0.1 / 0.3 - log_count, keep), 1))
    log_p_hard = np.log(np.where(keep, np_softmax(z - log_count, keep), 1))
    expected = 0.6 * -log_p_hard[np.arange(4), positive] + 0.4 * 9 * -np.sum(d * log_p_soft, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def np_decoupled(z, y, q, lambda1, lambda2, keep):
    out = []
    for row, target, positive, k in zip(z, q, y, keep):
        p = np_softmax(row, k)
        p_b, q_b = p[positive], lambda1 * target[positive] + 1 - lambda1
        rest = k.copy()
        rest[positive] = False
        p_hat, q_hat = p[rest] / p[rest].sum(), target[rest] / target[rest].sum()
        binary = -(q_b * np.log(p_b) + (1 - q_b) * np.log(1 - p_b))
        out.append(lambda2 * binary + (1 - lambda2) * np.sum(q_hat * np.log(q_hat / p_hat)))
    return np.array(out)


def test_decoupled_loss_matches_numpy(problem):
    keep = problem["keep"]
    q = st.restricted_target(t(problem["teacher"]), mask=t(keep))
    got = st.decoupled_soft_target_loss(t(problem["student"]), t(problem["positive"]), q, 0.3, 0.7, t(keep))
    expected = np_decoupled(problem["student"], problem["positive"], q.numpy(), 0.3, 0.7, keep)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("lambda1", [0.3, 1.0])
def test_decoupled_gradient_is_lambda2_times_the_coupled_gradient(lambda1, problem):
    """DeSoRec §A, per example with its own q_y.

    Coupled: ``L_c = λ1·H(q, p) + (1 − λ1)·H(onehot_y, p) = H(q̃, p)`` with
    ``q̃ = λ1·q + (1 − λ1)·onehot_y`` (``soft_target_loss`` with α = λ1). Split target vs rest:
    ``q̃_y = q_b = λ1·q_y + 1 − λ1``; the non-target mass of q̃ is ``1 − q_b = λ1(1 − q_y)`` and its
    renormalised part is q̂ (the non-target part of q renormalised), so
    ``H(q̃, p) = BCE(q_b, p_b) + (1 − q_b)·H(q̂, p̂)``, i.e.
    ``L_c = BCE + λ1(1 − q_y)·[KL(q̂ ‖ p̂) + H(q̂)]``.
    Decoupled: ``L_d = λ2·BCE + (1 − λ2)·KL(q̂ ‖ p̂)``. Then ``L_d = λ2·(L_c − (1 − q_b)·H(q̂))``
    iff ``1 − λ2 = λ2·λ1(1 − q_y)``, i.e. ``λ2 = 1/(1 + λ1(1 − q_y))``, and since H(q̂) does not
    depend on the model, ``∇L_d = λ2·∇L_c``.
    """
    # The issue says "the decoupled loss's gradient equals the coupled objective's scaled by 1/λ2":
    # the factor is inverted. ∇L_d = λ2·∇L_c, equivalently ∇L_c = ∇L_d / λ2 (λ2 ≤ 1, so at this
    # λ2 the decoupled gradient is the smaller one). Tested as derived above, values included.
    keep, positive = problem["keep"], problem["positive"]
    q = st.restricted_target(t(problem["teacher"]), mask=t(keep)).numpy()
    for i in range(len(q)):
        row = lambda a: t(a[i:i + 1])  # noqa: E731
        lambda2 = 1 / (1 + lambda1 * (1 - q[i, positive[i]]))
        decoupled, g_d = gradient(
            lambda z: st.decoupled_soft_target_loss(z, row(positive), row(q), lambda1, lambda2, row(keep)),
            problem["student"][i:i + 1])
        coupled, g_c = gradient(
            lambda z: st.soft_target_loss(z, row(positive), row(q), lambda1, student_mask=row(keep)),
            problem["student"][i:i + 1])
        np.testing.assert_allclose(g_d, lambda2 * g_c, atol=1e-12)
        rest = keep[i] & (np.arange(6) != positive[i])
        q_hat = q[i, rest] / q[i, rest].sum()
        q_b = lambda1 * q[i, positive[i]] + 1 - lambda1
        np.testing.assert_allclose(decoupled, lambda2 * (coupled - (1 - q_b) * np_entropy(q_hat)), rtol=1e-10)
        _, g_other = gradient(  # any other λ2 breaks the proportionality
            lambda z: st.decoupled_soft_target_loss(z, row(positive), row(q), lambda1, 0.5 * lambda2, row(keep)),
            problem["student"][i:i + 1])
        assert abs(np.dot(g_other.ravel(), g_c.ravel())) < 0.999 * np.linalg.norm(g_other) * np.linalg.norm(g_c)


def np_weights(embeddings, beta, neighbours):
    w = np.zeros((len(embeddings), len(embeddings)))
    for i, row in enumerate(neighbours):
        others = [j for j in row if j != i]
        logits = -np.linalg.norm(embeddings[others] - embeddings[i], axis=1) / beta
        np.add.at(w[i], others, np.exp(logits) / np.exp(logits).sum())
    return w


def test_label_propagation_on_six_nodes():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0], [11.0, 0.0], [13.0, 0.0]])
    w = st.propagation_weights(t(x), 1.0).numpy()
    # Row 0 by hand: Euclidean distances 1, 3, 10, 11, 13 (squared distances would give 1, 9, ...).
    row0 = np.exp(-np.array([1.0, 3, 10, 11, 13]))
    np.testing.assert_allclose(w[0], np.concatenate([[0], row0 / row0.sum()]), rtol=1e-10)
    np.testing.assert_allclose(w, np_weights(x, 1.0, [[j for j in range(6)]] * 6), rtol=1e-10, atol=1e-15)
    assert np.all(np.diag(w) == 0)
    q0 = np.eye(4)[[0, 0, 1, 2, 3, 3]]
    one_step = st.label_propagation(t(w), t(q0), alpha=0.5, iterations=1).numpy()
    np.testing.assert_allclose(one_step, 0.5 * w @ q0 + 0.5 * q0, rtol=1e-12)
    q20 = st.label_propagation(t(w), t(q0), alpha=0.5, iterations=20).numpy()
    fixed_point = 0.5 * np.linalg.solve(np.eye(6) - 0.5 * w, q0)
    np.testing.assert_allclose(q20, fixed_point, atol=2 * 0.5 ** 20)
    np.testing.assert_allclose(q20.sum(axis=1), 1, rtol=1e-12)
    assert np.array_equal(st.label_propagation(t(w), t(q0), iterations=0).numpy(), q0)


def test_sparse_propagation_matches_dense_with_the_same_neighbours(rng):
    x = rng.normal(size=(6, 3))
    neighbours = np.array([[0, 1, 2], [1, 0, 3], [4, 5, 2], [3, 2, 1], [5, 4, 0], [5, 3, 4]])  # self included
    sparse = st.propagation_weights(t(x), 0.5, t(neighbours))
    dense = np_weights(x, 0.5, neighbours)
    assert np.all(sparse.weights.numpy()[neighbours == np.arange(6)[:, None]] == 0)
    q0 = np.eye(5)[[0, 1, 1, 2, 3, 4]]
    np.testing.assert_allclose(st.label_propagation(sparse, t(q0), 0.5, 7).numpy(),
                               st.label_propagation(t(dense), t(q0), 0.5, 7).numpy(), rtol=1e-12)


def test_top_targets_and_sparse_target_logits():
    q = np.array([[0.1, 0.5, 0.0, 0.3, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0]])
    top = st.top_targets(t(q), 2)
    assert np.array_equal(top.item_ids.numpy()[0], [1, 3])
    np.testing.assert_allclose(top.probs.numpy(), [[0.625, 0.375], [0, 0]])
    logits = st.sparse_target_logits(top, t(np.array([3, 1, 4]))).numpy()
    np.testing.assert_allclose(np.exp(logits[0]), [0.375, 0.625, 0])
    np.testing.assert_allclose(st.restricted_target(t(logits)).numpy(), [[0.375, 0.625, 0], [0, 0, 0]])


def test_restricted_target_converges_to_the_full_catalog_as_the_candidate_set_grows():
    """Linear student ``s_j = e_j·u`` and a fixed random teacher over N = 2000 items; candidate sets
    of n draws (with replacement) from a Zipf-like proposal Q, corrected by ``log(n·Q_j)``.

    Compared with the full-catalog values: the KL value (the logQ terms cancel in
    ``KL(d_C ‖ p_C)``, whereas ``H(d_C, p_C)`` differs from ``H(d, p)`` by the student-independent
    ``Σ d_C log(n·Q)``), the gradient of the soft term w.r.t. u (full: ``Σ_j (p_j − d_j) e_j``) and
    ``Σ_C d_j s_j`` (full: ``E_{j∼d}[s_j]``). Mean absolute errors over 30 draws (one batch row
    per draw) shrink as n goes 50 → 200 → 1000.
    """
    rng = np.random.default_rng(1234)
    n_items, dim, draws = 2000, 8, 30
    e = rng.normal(size=(n_items, dim)) / np.sqrt(dim)
    u, v = rng.normal(size=dim), rng.normal(size=dim) * 1.5
    teacher = e @ v + 0.5 * rng.normal(size=n_items)
    proposal = 1 / (np.arange(n_items) + 10.0) ** 0.7
    proposal = rng.permutation(proposal / proposal.sum())
    d, p = np_softmax(teacher), np_softmax(e @ u)
    full_kl = np.sum(d * np.log(d / p))
    full_grad = e.T @ (p - d)
    full_mean = np.sum(d * (e @ u))
    errors = []
    for size in (50, 200, 1000):
        ids = rng.choice(n_items, size=(draws, size), p=proposal)
        log_count = np.log(size * proposal[ids])
        target = st.restricted_target(t(teacher[ids]), t(log_count))
        query = tf.Variable(np.tile(u, (draws, 1)))
        with tf.GradientTape() as tape:
            logits = tf.einsum("bnd,bd->bn", t(e[ids]), query)
            loss = st.soft_target_loss(logits, tf.zeros([draws], tf.int32), target, 1.0,
                                       student_log_expected_count=t(log_count))
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, query).numpy()
        kl = st.soft_target_kl(logits - log_count, target).numpy()
        mean = np.sum(target.numpy() * logits.numpy(), axis=1)
        errors.append([np.mean(np.abs(kl - full_kl)), np.mean(np.abs(grad - full_grad)),
                       np.mean(np.abs(mean - full_mean))])
    errors = np.array(errors)
    assert np.all(np.diff(errors, axis=0) < 0), errors
    assert np.all(errors[-1] < 0.5 * errors[0]), errors


@pytest.mark.parametrize("call, name", [
    (lambda: st.soft_target_loss(t([[0.0, 1.0]]), t([0]), t([[0.5, 0.5]]), 1.5), "alpha"),
    (lambda: st.soft_target_loss(t([[0.0, 1.0]]), t([0]), t([[0.5, 0.5]]), 0.5, student_temperature=-1.0),
     "student_temperature"),
    (lambda: st.soft_target_loss(t([[0.0, 1.0]]), t([0]), t([[0.5, 0.5]]), 0.5, student_temperature=1.0,
                                 base_temperature=0.0), "base_temperature"),
    (lambda: st.mix_with_onehot(t([[0.5, 0.5]]), t([0]), -0.1), "weight"),
    (lambda: st.popularity_target_logits(t([1.0, 2.0]), temperature=0.0), "temperature"),
    (lambda: st.popularity_target_logits(t([1.0, 2.0]), scaling="sqrt"), "scaling"),
    (lambda: st.decoupled_soft_target_loss(t([[0.0, 1.0]]), t([0]), t([[0.5, 0.5]]), lambda1=0.0), "lambda1"),
    (lambda: st.decoupled_soft_target_loss(t([[0.0, 1.0]]), t([0]), t([[0.5, 0.5]]), lambda2=1.2), "lambda2"),
    (lambda: st.propagation_weights(t([[0.0], [1.0]]), beta=0.0), "beta"),
    (lambda: st.label_propagation(t([[0.0, 1.0], [1.0, 0.0]]), t([[1.0], [1.0]]), alpha=2.0), "alpha"),
    (lambda: st.label_propagation(t([[0.0, 1.0], [1.0, 0.0]]), t([[1.0], [1.0]]), iterations=-1), "iterations"),
    (lambda: st.top_targets(t([[1.0]]), 0), "m"),
])
def test_bad_arguments_raise_config_error_naming_the_argument(call, name):
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        call()


def test_row_shared_logits_take_the_per_column_path_and_give_the_per_row_target(rng):
    """[C] target logits (label smoothing, popularity) under a [B, C] mask: the per-column path
    gives the per-row target, with OOV at −inf, duplicates masked, a [1, C] or [C] logQ."""
    batch, columns = 6, 14
    logits = np.r_[-np.inf, rng.normal(size=columns - 1) * 3]
    log_count = rng.normal(size=columns)
    keep = np.ones((batch, columns), bool)
    keep[:, 0] = False
    keep[1, -1] = keep[2, -2] = keep[3, [-1, -2]] = False
    expected = np_softmax(np.broadcast_to(logits - log_count, keep.shape), keep)
    for count in (log_count, log_count[np.newaxis]):
        got = st.restricted_target(t(logits), t(count), t(keep)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
        assert (got[~keep] == 0).all()
    # float32 as in training, against the per-row path of the same inputs
    per_row = st.restricted_target(t(np.broadcast_to(logits, keep.shape).astype(np.float32)),
                                   t(log_count.astype(np.float32)), t(keep)).numpy()
    shared = st.restricted_target(t(logits.astype(np.float32)), t(log_count.astype(np.float32)), t(keep)).numpy()
    np.testing.assert_allclose(shared, per_row, rtol=1e-5, atol=1e-7)


def test_row_shared_path_recomputes_rows_that_would_underflow():
    """A row keeping only values ~200 below the overall maximum sums to 0 with one shared shift
    (exp(−200) underflows in float32): it is recomputed with its own shift, not left all zeros;
    a row keeping nothing stays zeros."""
    logits = np.array([0.0, -200.0, -201.0], np.float32)
    keep = np.array([[True, True, True], [False, True, True], [False, False, False]])
    got = st.restricted_target(t(logits), mask=t(keep)).numpy()
    np.testing.assert_allclose(got[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(got[1], [0.0, 1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))], rtol=1e-6)
    np.testing.assert_array_equal(got[2], [0.0, 0.0, 0.0])


def test_mixed_target_cross_entropy_is_the_fused_loss_with_the_mixed_label(rng):
    """Value and gradient against NumPy H(a·d + b·onehot, softmax(z)), masked columns
    (logit −1e9, d = 0) and a row whose target is all zeros (only the b·onehot part is left)."""
    logits = rng.normal(size=(4, 6))
    logits[1, 3] = logits[2, 0] = -1e9
    positive = np.array([0, 4, 2, 5])
    d = rng.random((4, 6))
    d[1, 3] = d[2, 0] = 0.0
    d[3] = 0.0
    d /= np.maximum(d.sum(1, keepdims=True), 1e-30)
    a, b = 0.3, 0.55
    label = a * d + b * np.eye(6)[positive]
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected = -(label * log_p).sum(1)
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        got = st.mixed_target_cross_entropy(z, t(positive), t(d), a, b)
        total = tf.reduce_sum(got)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    expected_gradient = label.sum(1, keepdims=True) * np.exp(log_p) - label
    np.testing.assert_allclose(tape.gradient(total, z).numpy(), expected_gradient, atol=1e-12)
    fused = tf.nn.softmax_cross_entropy_with_logits(labels=t(label), logits=t(logits)).numpy()
    np.testing.assert_allclose(got.numpy(), fused, rtol=1e-10)


def test_restricted_target_with_finite_logits_skips_only_the_empty_row_test(problem):
    """``finite``: the same target as the default path, under a [B, C] and a [C] mask, with the
    logQ correction; every row sums to 1 and masked columns are exactly 0."""
    teacher, log_count, keep = problem["teacher"], problem["log_count"], problem["keep"]
    for mask, correction in ((keep, log_count), (keep[1], None), (keep[2], log_count[:1])):
        default = st.restricted_target(t(teacher), None if correction is None else t(correction), t(mask)).numpy()
        fast = st.restricted_target(t(teacher), None if correction is None else t(correction), t(mask),
                                    finite=True).numpy()
        shifted = teacher - (0 if correction is None else correction)
        np.testing.assert_allclose(fast, np_softmax(shifted, np.broadcast_to(mask, teacher.shape)), rtol=1e-12)
        np.testing.assert_allclose(fast, default, rtol=1e-12)
        np.testing.assert_allclose(fast.sum(axis=1), 1, rtol=1e-12)
        assert np.all(fast[~np.broadcast_to(mask, teacher.shape)] == 0)


def test_mixed_target_cross_entropy_told_the_rows_sum_to_one_is_unchanged(rng):
    logits = rng.normal(size=(3, 5))
    logits[0, 2] = -1e9
    keep = logits > -1e8
    d = np_softmax(rng.normal(size=(3, 5)), keep)
    positive = np.array([1, 0, 4])
    values = []
    for sums_to_one in (False, True):
        z = tf.Variable(logits)
        with tf.GradientTape() as tape:
            got = st.mixed_target_cross_entropy(z, t(positive), t(d), 0.4, 0.6, target_sums_to_one=sums_to_one)
            total = tf.reduce_sum(got)
        values.append((got.numpy(), tape.gradient(total, z).numpy()))
    np.testing.assert_allclose(values[1][0], values[0][0], rtol=1e-12)
    np.testing.assert_allclose(values[1][1], values[0][1], atol=1e-12)
