"""One training run from a :class:`tfsoft.config.Config`: data -> model -> fit -> evaluation.

This is the library entry point the CLI and the benchmarks call; it builds the objects from
the typed configuration and leaves the Keras ``fit`` loop untouched.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfsoft import losses as loss_objectives
from tfsoft.backend import keras, tf
from tfsoft.config import Config, DataConfig, FeatureFileConfig, LossConfig
from tfsoft.data import ColumnSpec, PreparedData, SplitSpec, make_dataset, next_item_examples, prepare
from tfsoft.data import load_interactions as data_source
from tfsoft.data.features import build_feature_table, read_feature_file
from tfsoft.data.registry import data_dir_candidates
from tfsoft.determinism import make_deterministic
from tfsoft.errors import ConfigError
from tfsoft.evaluation import EvaluationResult
from tfsoft.model import TwoTowerModel
from tfsoft.optimizers import LazyAdam
from tfsoft.towers import (
    FeatureTower, GRUTower, HistoryPoolingTower, IdTower, LightGCNEncoder, LightGCNItemTower, LightGCNUserTower, SASRecTower,
)
from tfsoft.validation import RankingValidation, evaluate_model


def load_interactions(config: DataConfig):
    """The canonical interactions table named by ``data.path`` (dataset name or file)."""
    columns = ColumnSpec(user=config.user_column, item=config.item_column, time=config.time_column,
                         weight=config.weight_column)
    return data_source(config.path, columns, delimiter=config.delimiter)


def _feature_table(spec: FeatureFileConfig | None, vocabulary):
    if spec is None:
        return None
    path = Path(spec.path)
    if not path.is_file() and path.name == spec.path:
        path = next((folder / spec.path for folder in data_dir_candidates() if (folder / spec.path).is_file()), path)
    return build_feature_table(read_feature_file(path), spec.id_column, vocabulary, categorical=spec.categorical,
                               numeric=spec.numeric, multivalued=dict(spec.multivalued), where=f"feature file '{path}'")


def prepare_data(config: DataConfig) -> PreparedData:
    """Read, filter, index and split the data of a config, and join its side features."""
    spec = SplitSpec(protocol=config.split, window=config.window, ratios=config.ratios, seed=0,
                     validation_fraction=config.validation_fraction, test_fraction=config.test_fraction)
    prepared = prepare(load_interactions(config), spec, min_user_interactions=config.min_user_interactions,
                       min_item_interactions=config.min_item_interactions)
    return dataclasses.replace(prepared, user_features=_feature_table(config.user_features, prepared.users),
                               item_features=_feature_table(config.item_features, prepared.items))


def _require_features(table, kind: str, key: str):
    if table is None:
        raise ConfigError(f"model.{key} is 'features' but data.{kind}_features is not set")
    return table


def build_loss(config: LossConfig) -> loss_objectives.RetrievalLoss:
    """The retrieval objective named by ``loss.name`` with its parameters."""
    if config.name == "full_softmax":
        return loss_objectives.FullSoftmax(temperature=config.temperature)
    if config.name == "sampled_softmax":
        return loss_objectives.SampledSoftmax(
            num_negatives=config.num_negatives or 256, proposal=config.proposal, beta=config.beta,
            shared_negatives=config.shared_negatives, temperature=config.temperature,
            log_q=config.log_q_correction, remove_accidental_hits=config.remove_accidental_hits)
    if config.name == "in_batch":
        return loss_objectives.InBatchSoftmax(
            temperature=config.temperature, log_q=config.log_q_correction,
            remove_duplicates=config.remove_duplicates, num_uniform_negatives=config.num_negatives or 0,
            frequency=config.frequency_estimation)
    if config.name == "bpr":
        return loss_objectives.BPR(num_negatives=config.num_negatives or 1)
    return loss_objectives.BCE(num_negatives=config.num_negatives or 4)


def build_model(config: Config, prepared: PreparedData) -> TwoTowerModel:
    """Towers + objective -> :class:`TwoTowerModel` (call inside the strategy's scope)."""
    dim, num_items = config.model.embedding_dim, prepared.items.num_indices
    if config.model.query_tower == "lightgcn":  # both towers read one propagated graph
        split = prepared.split
        encoder = LightGCNEncoder(prepared.users.num_indices, num_items, dim, config.model.num_layers,
                                  users=np.repeat(split.train_user, split.train.lengths), items=split.train.values,
                                  l2=config.model.l2, name="lightgcn")
        return _two_tower(config, prepared, LightGCNUserTower(encoder, name="query_tower"),
                          LightGCNItemTower(encoder, name="candidate_tower"))
    if config.model.candidate_tower == "features":
        candidate = FeatureTower(_require_features(prepared.item_features, "item", "candidate_tower"), dim,
                                 feature="item", l2=config.model.l2, name="candidate_tower")
    else:
        candidate = IdTower(num_items, dim, feature="item", l2=config.model.l2, name="candidate_tower")
    item_table = candidate.id_embedding if isinstance(candidate, FeatureTower) else candidate.embedding
    shared = item_table if config.model.tie_item_embeddings else None
    output = "sequence" if config.data.example_mode == "user" else "last"
    if config.model.query_tower == "features":
        query = FeatureTower(_require_features(prepared.user_features, "user", "query_tower"), dim, feature="user",
                             l2=config.model.l2, name="query_tower")
    elif config.model.query_tower == "id":
        query = IdTower(prepared.users.num_indices, dim, feature="user", l2=config.model.l2, name="query_tower")
    elif config.model.query_tower == "gru":
        query = GRUTower(num_items, dim, hidden_units=config.model.hidden_units, num_layers=config.model.num_layers,
                         dropout=0.5 if config.model.dropout is None else config.model.dropout, output=output,
                         l2=config.model.l2, item_embedding=shared, name="query_tower")
    elif config.model.query_tower == "sasrec":
        query = SASRecTower(num_items, dim, max_length=config.data.max_history, num_blocks=config.model.num_layers,
                            num_heads=config.model.num_heads,
                            dropout=0.3 if config.model.dropout is None else config.model.dropout, output=output,
                            l2=config.model.l2, item_embedding=shared, name="query_tower")
    else:
        query = HistoryPoolingTower(
            num_items, dim,
            num_users=prepared.users.num_indices if config.model.use_user_embedding else 0,
            history_exponent=config.model.history_exponent, l2=config.model.l2,
            item_embedding=shared,
            name="query_tower")
    return _two_tower(config, prepared, query, candidate)


def _two_tower(config: Config, prepared: PreparedData, query, candidate) -> TwoTowerModel:
    return TwoTowerModel(query, candidate, build_loss(config.loss), num_items=prepared.items.num_indices,
                         item_counts=prepared.item_counts, similarity=config.model.similarity,
                         score_similarity=config.model.score_similarity, seed=config.train.seed,
                         dense_gradients=config.train.dense_gradients)


def training_examples(config: Config, prepared: PreparedData) -> dict[str, np.ndarray]:
    """Next-item examples as feature arrays; an id query tower trains on every interaction."""
    split = prepared.split
    min_history = 0 if config.model.query_tower in ("id", "lightgcn", "features") else 1
    examples = next_item_examples(split.train, split.train_user, config.data.max_history,
                                  mode=config.data.example_mode, min_history=min_history)
    features = examples.as_features()
    if prepared.train_weights is not None and examples.row is not None:
        features["weight"] = prepared.train_weights.values[examples.row].astype(np.float32)
    return features


def make_strategy(name: str):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(config: Config):
    """The optimizer of ``train.optimizer``.

    ``adam`` is tf_keras' legacy ``Adam``: on a dense gradient it runs TensorFlow's fused
    ``ResourceApplyAdam`` kernel, one op per table instead of about ten, with the same update
    as ``keras.optimizers.Adam`` (``tests/test_gradients.py``). Embedding gradients reach it
    dense on one replica (:mod:`tfsoft.gradients`); on lastfm_small that is ~10 % of the step
    (``bench/bench_throughput.py``). Unlike ``keras.optimizers.Adam`` its moments are not
    written into ``*.weights.h5``; runs restore weights only, never the optimizer state.

    ``lazy_adam`` (:class:`tfsoft.optimizers.LazyAdam`) updates only the rows of the batch:
    for catalogs of 10^5 items and more, where Adam's update of every row dominates the step
    (``bench/bench_optimizers.py``).
    """
    optimizers = {"adam": keras.optimizers.legacy.Adam, "lazy_adam": LazyAdam, "adagrad": keras.optimizers.Adagrad,
                  "sgd": keras.optimizers.SGD}
    return optimizers[config.train.optimizer](learning_rate=config.train.learning_rate)


@dataclass
class TrainResult:
    """What a run produced: the model, the data it used, per-epoch logs and final metrics."""

    model: TwoTowerModel
    prepared: PreparedData
    history: dict[str, list[float]]
    validation: EvaluationResult
    test: EvaluationResult
    best_epoch: int
    train_seconds: float
    examples: int
    extra: dict = field(default_factory=dict)


def exclude_seen(config: Config) -> bool:
    if config.evaluation.exclude_seen is not None:
        return config.evaluation.exclude_seen
    return config.data.split != "leave_one_out"


def train(config: Config, *, prepared: PreparedData | None = None, callbacks=(), verbose: int = 0,
          deterministic: bool = False) -> TrainResult:
    """Train with ``fit`` (best epoch by ``train.monitor`` on validation), then evaluate the
    restored best model on validation and test with the full-ranking protocol.

    Seeds Python, NumPy and TensorFlow with ``train.seed``. ``deterministic=True`` also turns
    on deterministic TensorFlow ops for the whole process (:mod:`tfsoft.determinism`); it
    covers every kernel created afterwards, so do it (or let ``tfsoft train`` do it) before
    other TensorFlow work in the process."""
    make_deterministic(config.train.seed, ops=deterministic)
    prepared = prepared or prepare_data(config.data)
    features = training_examples(config, prepared)
    strategy = make_strategy(config.distribute.strategy)
    replicas = strategy.num_replicas_in_sync
    # With train.steps_per_epoch an epoch is a number of steps, not a pass over the data: repeat
    # the (reshuffled) examples so that fit never runs out of input.
    dataset = make_dataset(features, config.train.batch_size, seed=config.train.seed, drop_remainder=replicas > 1,
                           repeat=config.train.steps_per_epoch is not None)
    with strategy.scope():
        model = build_model(config, prepared)
        model.compile(optimizer=make_optimizer(config))
    validation = RankingValidation(prepared.split.validation, max_history=config.data.max_history,
                                   ks=config.evaluation.ks, exclude_seen=exclude_seen(config))
    stopper = keras.callbacks.EarlyStopping(
        monitor=config.train.monitor, mode="max" if "loss" not in config.train.monitor else "min",
        patience=config.train.early_stopping_patience or config.train.epochs, restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(dataset, epochs=config.train.epochs, validation_data=validation,
                        callbacks=[stopper, *callbacks], verbose=verbose,
                        steps_per_epoch=config.train.steps_per_epoch)
    seconds = time.perf_counter() - started
    evaluate = dict(max_history=config.data.max_history, ks=config.evaluation.ks,
                    exclude_seen=exclude_seen(config), item_counts=prepared.item_counts)
    return TrainResult(
        model=model, prepared=prepared, history={k: [float(x) for x in v] for k, v in history.history.items()},
        validation=evaluate_model(model, prepared.split.validation, **evaluate),
        test=evaluate_model(model, prepared.split.test, **evaluate),
        best_epoch=int(stopper.best_epoch) + 1, train_seconds=seconds, examples=len(features["target"]),
    )
