"""NARM's global + local encoder against NumPy (NARM Eqs. 5–9)."""

import numpy as np

from tfsoft.backend import tf

from tests.towers.test_sequence_towers import HISTORIES, make


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_narm_query_is_the_projected_last_state_and_unnormalised_attention():
    tower = make("narm")
    history = HISTORIES["history"]
    got = tower(HISTORIES).numpy()
    states = tower.gru(tower.item_embedding(history), mask=tf.not_equal(history, 0)).numpy()  # [B, L, H]
    a1, a2 = tower.query_transform.get_weights()[0], tower.key_transform.get_weights()[0]
    v, b = tower.score.get_weights()[0][:, 0], tower.projection.get_weights()[0]
    for row, items in enumerate(history.numpy()):
        real = states[row][items > 0]  # padded steps get no weight
        alpha = _sigmoid(states[row, -1] @ a1 + real @ a2) @ v  # Eq. 7, no softmax
        context = np.concatenate([states[row, -1], alpha @ real])  # [c_g; c_l], Eq. 8
        np.testing.assert_allclose(got[row], context @ b, atol=1e-5)


def test_narm_per_position_inference_equals_the_training_computation():
    """Inference over every position attends one position at a time (bounded memory); without
    dropout it gives what the vectorised training path gives."""
    from tfsoft.towers import NARMTower

    tower = NARMTower(30, 8, hidden_units=6, embedding_dropout=0.0, dropout=0.0, output="sequence")
    inference = tower(HISTORIES, training=False).numpy()
    np.testing.assert_allclose(tower(HISTORIES, training=True).numpy(), inference, atol=1e-5)
