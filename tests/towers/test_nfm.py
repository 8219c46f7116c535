"""NFM's bi-interaction pooling against the sum of pairwise products (NFM Eq. 4), and the tower by hand."""

import itertools

import numpy as np

from tfsoft.backend import tf
from tfsoft.towers import bi_interaction

from tests.towers.test_sequence_towers import HISTORIES, make


def test_bi_interaction_is_the_sum_of_pairwise_products(rng):
    embeddings, weights = rng.normal(size=(3, 5, 4)), rng.uniform(size=(3, 5))
    weights[0, 1] = 0  # a dropped feature
    want = np.stack([sum(weights[b, i] * embeddings[b, i] * weights[b, j] * embeddings[b, j]
                         for i, j in itertools.combinations(range(5), 2)) for b in range(3)])
    got = bi_interaction(tf.constant(embeddings), tf.constant(weights)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_nfm_tower_pools_history_and_user_then_mlp():
    tower = make("nfm_user")  # x_j = |H|^-0.5, x_u = 1, one ReLU layer
    got = tower(HISTORIES).numpy()
    items, users = tower.item_embedding.get_weights()[0], tower.user_embedding.get_weights()[0]
    (w1, b1), (w2, b2) = tower.mlp[0].get_weights(), tower.projection.get_weights()
    for row, (user, history) in enumerate(zip(HISTORIES["user"].numpy(), HISTORIES["history"].numpy())):
        real = history[history > 0]
        features = np.concatenate([users[[user]], items[real] / np.sqrt(len(real))])
        pooled = 0.5 * (features.sum(0) ** 2 - (features ** 2).sum(0))
        np.testing.assert_allclose(got[row], np.maximum(pooled @ w1 + b1, 0) @ w2 + b2, rtol=1e-5, atol=1e-5)
