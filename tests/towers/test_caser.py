"""Caser reads only the last L items."""

import numpy as np

from tfsoft.backend import tf

from tests.towers.test_sequence_towers import HISTORIES, make


def test_caser_reads_only_the_last_l_items_and_the_user():
    tower = make("caser")  # L = 4
    expected = tower(HISTORIES).numpy()
    older = {"user": HISTORIES["user"], "history": tf.constant([[0, 0, 4, 5, 6], [9, 7, 8, 9, 10]])}
    np.testing.assert_allclose(tower(older).numpy(), expected, atol=1e-6)  # item 5 back is outside the window
    with_user = make("caser_user")
    other_user = {"user": tf.constant([3, 2]), "history": HISTORIES["history"]}
    changed = with_user(other_user).numpy() != with_user(HISTORIES).numpy()
    assert changed[0].any() and not changed[1].any()
