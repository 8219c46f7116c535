import numpy as np
import pandas as pd
import pytest

from tfsoft.backend import keras, tf
from tfsoft.data import Vocabulary
from tfsoft.data.features import build_feature_table, read_feature_file
from tfsoft.data.registry import data_dir_candidates
from tfsoft.errors import DataError
from tfsoft.towers import FeatureTower

ITEMS = pd.DataFrame({"item": [10, 20, 30], "year": [1990, 2000, None], "kind": ["a", "b", "a"],
                      "genres": ["x y", "y", None]})


def test_feature_table_alignment_by_hand():
    vocab = Vocabulary.build([20, 10, 40, 30], name="item")  # indices: 20->1, 10->2, 40->3, 30->4
    table = build_feature_table(ITEMS, "item", vocab, categorical=("kind",), numeric=("year",),
                                multivalued={"genres": " "})
    kinds = table.vocabularies["kind"]
    assert [kinds[c - 1] if c else None for c in table.categorical["kind"]] == [None, "b", "a", None, "a"]
    mean, std = table.numeric_stats["year"]
    assert mean == pytest.approx(1995) and std == pytest.approx(5)
    np.testing.assert_allclose(table.numeric["year"], [0, 1, -1, 0, 0])
    genres = table.vocabularies["genres"]
    decoded = [[genres[c - 1] for c in row if c] for row in table.multivalued["genres"]]
    assert decoded == [[], ["y"], ["x", "y"], [], []]


def test_feature_table_errors():
    vocab = Vocabulary.build([10, 20], name="item")
    with pytest.raises(DataError, match=r"feature column 'colour' missing from items.csv; found: item, year"):
        build_feature_table(ITEMS, "item", vocab, categorical=("colour",), where="items.csv")
    with pytest.raises(DataError, match=r"lists id 10 twice \(row 2\)"):
        build_feature_table(pd.DataFrame({"item": [10, 10], "k": [1, 2]}), "item", vocab, categorical=("k",))
    with pytest.raises(DataError, match=r"numeric feature 'year' .* non-numeric value 'old'"):
        build_feature_table(pd.DataFrame({"item": [10], "year": ["old"]}), "item", vocab, numeric=("year",))


def test_feature_tower_shapes_oov_and_genre_mask():
    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build([10, 20, 30], name="item")
    table = build_feature_table(ITEMS, "item", vocab, categorical=("kind",), numeric=("year",),
                                multivalued={"genres": " "})
    tower = FeatureTower(table, dim=8, feature_dim=4, hidden_units=(16,))
    catalog = tower(tf.range(vocab.num_indices)).numpy()
    assert catalog.shape == (4, 8)
    assert tower({"item": tf.constant([1, 2])}).shape == (2, 8)
    np.testing.assert_allclose(tower(tf.constant([[1, 2]])).numpy()[0], catalog[[1, 2]], atol=1e-6)
    content_only = FeatureTower(table, dim=8, use_id=False)
    assert content_only(tf.constant([0, 1])).shape == (2, 8)


def test_ml100k_feature_files_load():
    folder = next(path for path in data_dir_candidates() if (path / "ml-100k.item").is_file())
    items = read_feature_file(folder / "ml-100k.item")
    users = read_feature_file(folder / "ml-100k.user")
    assert {"item_id", "release_year", "class"} <= set(items.columns) and len(items) == 1682
    assert {"user_id", "age", "gender", "occupation"} <= set(users.columns) and len(users) == 943
    vocab = Vocabulary.build(items["item_id"], name="item")
    table = build_feature_table(items, "item_id", vocab, categorical=("release_year",), multivalued={"class": " "})
    assert table.multivalued_sizes["class"] >= 19  # the 18 genres + unknown, + padding


def test_feature_tower_pools_only_real_tokens_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build([10, 20, 30], name="item")
    table = build_feature_table(ITEMS, "item", vocab, multivalued={"genres": " "})
    tower = FeatureTower(table, dim=4, use_id=False, hidden_units=())
    catalog = tower(tf.range(vocab.num_indices)).numpy()
    genre_table = tower.multivalued["genres"].get_weights()[0]
    kernel, bias = tower.projection.get_weights()
    codes = table.multivalued["genres"]
    for row in range(vocab.num_indices):
        real = codes[row][codes[row] > 0]
        pooled = genre_table[real].mean(0) if len(real) else np.zeros(genre_table.shape[1])
        np.testing.assert_allclose(catalog[row], pooled @ kernel + bias, atol=1e-5)
    module = tf.Module()
    module.tower = tower
    module.serve = tf.function(lambda ids: tower(ids), input_signature=[tf.TensorSpec([None], tf.int64)])
    tf.saved_model.save(module, str(tmp_path / "features"))
    loaded = tf.saved_model.load(str(tmp_path / "features"))
    np.testing.assert_allclose(loaded.serve(tf.range(vocab.num_indices, dtype=tf.int64)).numpy(), catalog, atol=1e-6)
