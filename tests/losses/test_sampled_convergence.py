"""Sampled softmax with logQ correction converges to full softmax as N grows; without the
correction it does not (under a non-uniform proposal)."""

import numpy as np

from tfsoft.backend import tf
from tfsoft.losses import full_softmax_loss, sampled_softmax_loss

V, D, B = 40, 4, 3


def _setup():
    rng = np.random.default_rng(1)
    catalog = rng.normal(size=(V, D))
    query = rng.normal(size=(B, D))
    positives = np.array([3, 17, 30])
    proposal = 1.0 / np.arange(1, V + 1) ** 2.0  # steep Zipf, far from uniform
    return rng, catalog, query, positives, proposal / proposal.sum()


def _loss_and_grad(function, query, catalog):
    q, c = tf.Variable(query), tf.Variable(catalog)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(function(q, c))
    gq, gc = tape.gradient(loss, [q, c])
    return float(loss), np.concatenate([gq.numpy().ravel(), tf.convert_to_tensor(gc).numpy().ravel()])


def _sampled(rng, catalog, query, positives, proposal, n, correct):
    negative_ids = rng.choice(V, size=n, p=proposal)
    log_count = np.log(n * proposal[negative_ids])

    def function(q, c):
        return sampled_softmax_loss(
            q, tf.gather(c, positives), tf.constant(positives), tf.gather(c, negative_ids), tf.constant(negative_ids),
            temperature=0.5, negative_log_expected_count=tf.constant(log_count) if correct else None)

    return _loss_and_grad(function, query, catalog)


def test_log_q_corrected_sampled_softmax_converges_to_full_softmax():
    rng, catalog, query, positives, proposal = _setup()
    full_loss, full_grad = _loss_and_grad(
        lambda q, c: full_softmax_loss(q, c, tf.constant(positives), temperature=0.5), query, catalog)
    errors = {}
    for n in (50, 500, 50_000):
        runs = [_sampled(rng, catalog, query, positives, proposal, n, correct=True) for _ in range(4)]
        loss = np.mean([r[0] for r in runs])
        grad = np.mean([r[1] for r in runs], axis=0)
        errors[n] = (abs(loss - full_loss) / abs(full_loss), np.linalg.norm(grad - full_grad) / np.linalg.norm(full_grad))
    assert errors[50_000][0] < 0.01 and errors[50_000][1] < 0.03, errors
    assert errors[50_000][1] < errors[50][1], errors

    uncorrected = [_sampled(rng, catalog, query, positives, proposal, 50_000, correct=False) for _ in range(2)]
    bad_loss = np.mean([r[0] for r in uncorrected])
    bad_grad = np.mean([r[1] for r in uncorrected], axis=0)
    assert np.linalg.norm(bad_grad - full_grad) / np.linalg.norm(full_grad) > 0.2  # measured 0.27
    assert abs(bad_loss - full_loss) > 1.0  # does not converge: it estimates a different objective
