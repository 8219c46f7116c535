"""evaluate_model / evaluate_splits on a real split with seen items excluded, against NumPy;
training from CSV and Parquet files through the CLI; l2 regularisation in the loss."""

import json

import numpy as np
import pytest

from tfsoft.backend import keras, tf
from tfsoft.config import parse_config
from tfsoft.training import build_model, prepare_data
from tfsoft.validation import evaluate_splits


def numpy_recall_ndcg(query, catalog, queries, k, exclude_seen):
    """Full ranking in NumPy: item 0 never ranked; seen items removed unless they are targets."""
    recall, ndcg = [], []
    for q, history, targets in zip(query, queries.history, queries.targets):
        scores = catalog @ q
        scores[0] = -np.inf
        if exclude_seen:
            seen = np.setdiff1d(history, targets)
            scores[seen] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        hits = np.isin(top, targets)
        recall.append(hits.sum() / len(set(targets)))
        dcg = (hits / np.log2(np.arange(2, k + 2))).sum()
        ideal = (1 / np.log2(np.arange(2, min(len(set(targets)), k) + 2))).sum()
        ndcg.append(dcg / ideal)
    return np.mean(recall), np.mean(ndcg)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_exclude_seen_metrics_match_numpy_on_a_ratio_split(exclude_seen):
    # tied item tables: a query (the mean of its history) sits next to its own history items,
    # so excluding them changes the ranking
    config = parse_config({"data": {"path": "lastfm_small", "split": "ratio"},
                           "model": {"embedding_dim": 16, "tie_item_embeddings": True},
                           "evaluation": {"exclude_seen": exclude_seen, "ks": [10]}})
    prepared = prepare_data(config.data)
    keras.utils.set_random_seed(3)
    model = build_model(config, prepared)
    metrics = evaluate_splits(model, config, prepared, ["test"])["test"]
    from tfsoft.data import query_features

    queries = prepared.split.test
    query = model(query_features(queries.user, queries.history, config.data.max_history)).numpy().astype(np.float64)
    catalog = model.candidate_embeddings().numpy().astype(np.float64)
    recall, ndcg = numpy_recall_ndcg(query, catalog, queries, 10, exclude_seen)
    assert metrics["num_queries"] == len(queries.user)
    assert metrics["recall@10"] == pytest.approx(recall, rel=1e-9, abs=1e-12)
    assert metrics["ndcg@10"] == pytest.approx(ndcg, rel=1e-9, abs=1e-12)


def test_excluding_seen_items_changes_the_metrics_on_a_ratio_split():
    results = {}
    for flag in (True, False):
        config = parse_config({"data": {"path": "lastfm_small", "split": "ratio"},
                               "model": {"embedding_dim": 16, "tie_item_embeddings": True},
                               "evaluation": {"exclude_seen": flag}})
        keras.utils.set_random_seed(3)
        prepared = prepare_data(config.data)
        results[flag] = evaluate_splits(build_model(config, prepared), config, prepared, ["validation"])
    # seen items took places in the top 20 that excluding them frees for held-out ones
    assert results[True]["validation"]["recall@20"] > results[False]["validation"]["recall@20"]


def test_l2_adds_the_squared_norm_of_the_tables_to_the_loss():
    config = parse_config({"model": {"embedding_dim": 8, "l2": 0.01}, "data": {"path": "lastfm_small", "window": 20}})
    prepared = prepare_data(config.data)
    from tfsoft.training import training_examples

    features = {k: v[:64] for k, v in training_examples(config, prepared).items()}
    losses = {}
    for l2 in (0.0, 0.01):
        keras.utils.set_random_seed(0)
        model = build_model(config.model_copy(update={"model": config.model.model_copy(update={"l2": l2})}), prepared)
        model.compile(optimizer="sgd")
        losses[l2] = model.evaluate(tf.data.Dataset.from_tensor_slices(features).batch(64), verbose=0)
        tables = [w.numpy().astype(np.float64) for w in model.trainable_variables]
    expected = 0.01 * sum((table ** 2).sum() for table in tables)
    assert len(tables) == 2  # history and candidate item tables
    assert losses[0.01] - losses[0.0] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_training_from_a_csv_or_parquet_file_through_the_cli(tmp_path, capsys, suffix):
    from tfsoft.cli import main
    from tfsoft.data import load_dataset

    frame = load_dataset("lastfm_small").rename(columns={"user": "uid", "item": "sku"})
    frame = frame[frame["uid"].isin(frame["uid"].unique()[:300])]
    path = tmp_path / f"log.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path, index=False)
    run = tmp_path / "run"
    code = main(["train", "--config", "configs/lastfm_in_batch.yaml", "--run-dir", str(run),
                 "--set", f"data.path={path}", "--set", "data.user_column=uid", "--set", "data.item_column=sku",
                 "--set", "train.epochs=1", "--set", "train.steps_per_epoch=5", "--set", "model.embedding_dim=8"])
    assert code == 0, capsys.readouterr().err
    from tfsoft.data.vocabulary import Vocabulary

    metrics = json.loads((run / "metrics.json").read_text())
    assert Vocabulary.load(run / "user_vocabulary.json").size == 300 and metrics["test"]["num_queries"] >= 300
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["ndcg@10"] == metrics["test"]["ndcg@10"]
