"""fit with full-ranking validation, ModelCheckpoint and EarlyStopping on real data."""

import numpy as np

from tfsoft.backend import keras
from tfsoft.config import parse_config
from tfsoft.data import make_dataset
from tfsoft.training import build_model, prepare_data, train, training_examples
from tfsoft.validation import RankingValidation, evaluate_model

CONFIG = {"data": {"path": "lastfm_small", "window": 20, "max_history": 20},
          "model": {"embedding_dim": 32},
          "loss": {"name": "in_batch", "temperature": 0.1},
          "train": {"epochs": 3, "batch_size": 512, "early_stopping_patience": 1}}


def test_fit_with_ranking_validation_checkpoint_and_early_stopping(tmp_path):
    config = parse_config(CONFIG)
    prepared = prepare_data(config.data)
    keras.utils.set_random_seed(0)
    model = build_model(config, prepared)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    dataset = make_dataset(training_examples(config, prepared), 512, seed=0)
    validation = RankingValidation(prepared.split.validation, max_history=20, ks=(10, 20))
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"), monitor="val_ndcg@10",
                                                 mode="max", save_best_only=True, save_weights_only=True)
    stopper = keras.callbacks.EarlyStopping(monitor="val_ndcg@10", mode="max", patience=1,
                                            restore_best_weights=True)
    history = model.fit(dataset, epochs=3, validation_data=validation, callbacks=[checkpoint, stopper], verbose=0)
    logs = history.history
    for key in ("loss", "val_recall@10", "val_ndcg@10", "val_mrr@10", "val_recall@20"):
        assert key in logs and len(logs[key]) >= 2, key
    assert (tmp_path / "best.weights.h5").exists()
    assert logs["loss"][-1] < logs["loss"][0]
    # Learning happened: far above a random ranker (10/3646 ~ 0.003).
    assert max(logs["val_recall@10"]) > 0.05
    restored = evaluate_model(model, prepared.split.validation, max_history=20, ks=(10, 20))
    assert restored.metrics["ndcg@10"] == np.float64(max(logs["val_ndcg@10"])) or \
        abs(restored.metrics["ndcg@10"] - max(logs["val_ndcg@10"])) < 1e-6


def test_train_entry_point_reports_validation_and_test():
    config = parse_config({**CONFIG, "train": {**CONFIG["train"], "epochs": 2}})
    result = train(config)
    assert set(result.test.metrics) >= {"recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20"}
    assert result.test.num_queries == 3173 and result.validation.num_queries == 3173
    assert 1 <= result.best_epoch <= 2
    assert result.test.metrics["recall@10"] > 0.03  # 10x a random ranker after 2 short epochs


def test_feature_towers_train_on_ml100k_with_user_and_item_features():
    config = parse_config({
        "data": {"path": "ml-100k", "split": "ratio", "max_history": 30,
                 "user_features": {"path": "ml-100k.user", "id_column": "user_id",
                                   "categorical": ["gender", "occupation"], "numeric": ["age"]},
                 "item_features": {"path": "ml-100k.item", "id_column": "item_id",
                                   "categorical": ["release_year"], "multivalued": {"class": " "}}},
        "model": {"query_tower": "features", "candidate_tower": "features", "embedding_dim": 16},
        "train": {"epochs": 2, "batch_size": 512}})
    result = train(config)
    assert result.prepared.item_features.multivalued_sizes["class"] >= 19
    assert result.test.metrics["recall@10"] > 0.012  # twice a random ranker (10/1682)


def test_lightgcn_trains_on_ratio_split():
    config = parse_config({"data": {"path": "lastfm_small", "split": "ratio"},
                           "model": {"query_tower": "lightgcn", "embedding_dim": 16, "num_layers": 2},
                           "train": {"epochs": 2, "batch_size": 512}})
    result = train(config)
    assert result.test.num_queries > 1000 and result.test.metrics["recall@20"] > 0.011  # 2x random (20/3646)


def test_feature_tower_without_feature_file_is_a_config_error():
    import pytest

    from tfsoft.errors import ConfigError

    config = parse_config({"model": {"candidate_tower": "features"}})
    with pytest.raises(ConfigError, match=r"model.candidate_tower is 'features' but data.item_features is not set"):
        build_model(config, prepare_data(config.data))


def test_steps_per_epoch_repeats_the_data_instead_of_running_out():
    # 3,646-item lastfm_small at batch 4096: ~12 batches per pass; 4 epochs of 5 steps need 20.
    config = parse_config({**CONFIG, "model": {"embedding_dim": 8},
                           "train": {"epochs": 4, "batch_size": 4096, "steps_per_epoch": 5,
                                     "early_stopping_patience": None}})
    result = train(config)
    assert len(result.history["loss"]) == 4
