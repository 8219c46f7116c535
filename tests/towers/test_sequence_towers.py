"""Shape, padding-mask, causality, dropout and save/load tests for the history-reading towers."""

import numpy as np
import pytest

from tfsoft.backend import keras, tf
from tfsoft.towers import (
    CaserTower, GRUTower, HistoryPoolingTower, IdTower, NARMTower, NextItNetTower, NFMTower, SASRecTower,
    YoutubeDNNTower,
)

V, D = 30, 8

#: kind -> output -> a small tower (with dropout where the tower has any)
TOWERS = {
    "pooling": lambda output: HistoryPoolingTower(V, D, num_users=5, history_exponent=0.5),
    "gru": lambda output: GRUTower(V, D, num_layers=2, dropout=0.5, output=output),
    "sasrec": lambda output: SASRecTower(V, D, max_length=12, num_blocks=2, num_heads=2, dropout=0.3, output=output),
    "narm": lambda output: NARMTower(V, D, hidden_units=6, embedding_dropout=0.25, dropout=0.5, output=output),
    "nextitnet": lambda output: NextItNetTower(V, D, dilations=(1, 2), num_repeats=2, dropout=0.3, output=output),
    "caser": lambda output: CaserTower(V, D, max_length=4, num_horizontal=3, num_vertical=2, dropout=0.5),
    "caser_user": lambda output: CaserTower(V, D, max_length=6, num_horizontal=3, num_vertical=2, num_users=5),
    "youtube_dnn": lambda output: YoutubeDNNTower(V, D, hidden_units=(16, 12), dropout=0.3),
    "nfm": lambda output: NFMTower(V, D, hidden_units=(16,), dropout=0.3),
    "nfm_user": lambda output: NFMTower(V, D, hidden_units=(16,), num_users=5, history_exponent=0.5),
}
SEQUENCE = ["gru", "sasrec", "narm", "nextitnet"]
WITH_DROPOUT = ["gru", "sasrec", "narm", "nextitnet", "caser", "youtube_dnn", "nfm"]


def make(kind, output="last"):
    keras.utils.set_random_seed(0)
    return TOWERS[kind](output)


HISTORIES = {"user": tf.constant([1, 2]), "history": tf.constant([[0, 0, 4, 5, 6], [0, 7, 8, 9, 10]])}
LONGER = {"user": tf.constant([1, 2]),
          "history": tf.constant([[0, 0, 0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 7, 8, 9, 10]])}


@pytest.mark.parametrize("kind", list(TOWERS))
def test_shapes_and_left_padding_is_masked(kind):
    tower = make(kind)
    short, long = tower(HISTORIES).numpy(), tower(LONGER).numpy()
    assert short.shape == (2, D)
    np.testing.assert_allclose(short, long, atol=1e-5)  # extra padding changes nothing
    # and a different padded item would change the result if it were read
    changed = {"user": HISTORIES["user"], "history": tf.constant([[0, 3, 4, 5, 6], [0, 7, 8, 9, 10]])}
    assert not np.allclose(tower(changed).numpy()[0], short[0])


@pytest.mark.parametrize("kind", SEQUENCE)
def test_sequence_output_gives_a_query_per_position_and_is_causal(kind):
    tower = make(kind, output="sequence")
    outputs = tower(HISTORIES).numpy()
    assert outputs.shape == (2, 5, D)
    np.testing.assert_allclose(outputs[:, -1], make(kind)(HISTORIES).numpy(), atol=1e-5)
    # causal: the query at position 3 does not see the item at position 4
    future = {"user": HISTORIES["user"], "history": tf.constant([[0, 0, 4, 5, 11], [0, 7, 8, 9, 12]])}
    np.testing.assert_allclose(tower(future).numpy()[:, :4], outputs[:, :4], atol=1e-5)


@pytest.mark.parametrize("kind", WITH_DROPOUT)
def test_dropout_only_in_training(kind):
    tower = make(kind)
    a, b = tower(HISTORIES, training=False).numpy(), tower(HISTORIES, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(tower(HISTORIES, training=True).numpy(), a)


def test_pooling_by_hand():
    tower = HistoryPoolingTower(V, D, history_exponent=1.0)
    tower(HISTORIES)
    table = tower.item_embedding.get_weights()[0]
    np.testing.assert_allclose(tower(HISTORIES).numpy()[0], table[[4, 5, 6]].mean(0), atol=1e-6)
    sqrt = HistoryPoolingTower(V, D, history_exponent=0.5, item_embedding=tower.item_embedding)
    np.testing.assert_allclose(sqrt(HISTORIES).numpy()[0], table[[4, 5, 6]].sum(0) / np.sqrt(3), atol=1e-6)
    empty = {"history": tf.constant([[0, 0, 0, 0, 0]])}
    np.testing.assert_array_equal(tower(empty).numpy(), 0)


@pytest.mark.parametrize("kind", ["id", *TOWERS])
def test_save_and_load_round_trip(kind, tmp_path):
    tower = IdTower(V, D, feature="user", hidden_units=(16,)) if kind == "id" else make(kind)
    expected = tower(HISTORIES).numpy()
    # Keras config + weights
    clone = type(tower).from_config(tower.get_config())
    clone(HISTORIES)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(HISTORIES).numpy(), expected, atol=1e-6)
    # SavedModel: what export uses
    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(lambda user, history: tower({"user": user, "history": history}),
                               input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32)])
    tf.saved_model.save(module, str(tmp_path / "tower"))
    loaded = tf.saved_model.load(str(tmp_path / "tower"))
    np.testing.assert_allclose(loaded.serve(HISTORIES["user"], HISTORIES["history"]).numpy(), expected, atol=1e-6)
