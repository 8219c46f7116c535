"""One training run from a :class:`tfsoft.config.Config`: data -> model -> ``fit``.

The library entry point ``tfsoft train`` (:func:`tfsoft.train_run.train_run`) and the benchmarks
call; it builds the objects from the typed configuration (components through their
registries) and leaves the Keras ``fit`` loop untouched. Evaluating the chosen checkpoint is
:func:`tfsoft.validation.evaluate_splits`, once per split, for both callers.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfsoft.backend import keras
from tfsoft.config import Config, DataConfig, FeatureFileConfig, monitor_mode
from tfsoft.data import (
    ColumnSpec, PreparedData, Ragged, SplitSpec, make_dataset, next_item_examples, prepare, query_features,
)
from tfsoft.data.sequences import SEQUENCE_MODES
from tfsoft.data import load_interactions as data_source
from tfsoft.data.features import build_feature_table, read_feature_file
from tfsoft.data.registry import data_dir_candidates
from tfsoft.determinism import make_deterministic
from tfsoft.model import TwoTowerModel
from tfsoft.optimizers import LazyAdam
from tfsoft.towers.sections import TowerContext
from tfsoft.validation import RankingValidation, exclude_seen


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


def tower_context(config: Config, prepared: PreparedData) -> TowerContext:
    """What the tower builders read from the config and the data."""
    return TowerContext(num_items=prepared.items.num_indices, num_users=prepared.users.num_indices,
                        dim=config.model.embedding_dim, l2=config.model.l2, max_history=config.data.max_history,
                        output="sequence" if config.data.example_mode in SEQUENCE_MODES else "last",
                        tie_item_embeddings=config.model.tie_item_embeddings, prepared=prepared)


def create_variables(model: TwoTowerModel, config: Config) -> None:
    """Create every variable of a built model by calling both towers once (HDF5 weights load
    into, and baselines are evaluated as, a model whose variables exist)."""
    model(query_features(np.zeros(1, np.int64), Ragged.from_rows([[]]), config.data.max_history))
    model.candidate_embeddings()


def build_model(config: Config, prepared: PreparedData, *, soft_target: bool = True) -> TwoTowerModel:
    """Towers + objective -> :class:`TwoTowerModel` (call inside the strategy's scope).

    Every component comes from its config section (:mod:`tfsoft.towers.sections`,
    :mod:`tfsoft.losses.sections`, :mod:`tfsoft.teachers.sections`): this function knows no
    tower or loss by name. ``soft_target=False`` leaves the soft-target term out (evaluation and
    export of a trained run need no teacher)."""
    query, candidate = config.model.query_tower.build_towers(tower_context(config, prepared),
                                                             config.model.candidate_tower)
    loss = config.loss.build()
    if soft_target and config.soft_target is not None:
        loss = config.soft_target.wrap(loss, config, prepared)
    arguments = dict(num_items=prepared.items.num_indices, item_counts=prepared.item_counts,
                     similarity=config.model.similarity, score_similarity=config.model.score_similarity,
                     seed=config.train.seed, dense_gradients=config.train.dense_gradients)
    # An objective with its own training step (til: two optimizers and a look-ahead, and the
    # training pairs its step reads) builds its TwoTowerModel subclass itself.
    make_model = getattr(loss, "make_model", None)
    if make_model is not None:
        return make_model(query, candidate, prepared, **arguments)
    if getattr(loss, "mask_seen", False):  # bpr/bce: negatives that are the user's training items are masked
        arguments["seen_pairs"] = training_pairs(prepared)
    return TwoTowerModel(query, candidate, loss, **arguments)


def training_pairs(prepared: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    """(user indices, item indices) of every training interaction, one pair each."""
    split = prepared.split
    users = np.repeat(np.asarray(split.train_user, np.int64), split.train.lengths)
    return users, np.asarray(split.train.values, np.int64)


def training_examples(config: Config, prepared: PreparedData) -> dict[str, np.ndarray]:
    """Next-item examples as feature arrays; a query tower that does not read the history
    trains on every interaction (the first of each sequence included)."""
    split = prepared.split
    min_history = 1 if "history" in config.model.query_tower.query_inputs() else 0
    examples = next_item_examples(split.train, split.train_user, config.data.max_history,
                                  mode=config.data.example_mode, min_history=min_history)
    features = examples.as_features()
    if prepared.train_weights is not None and examples.row is not None:
        features["weight"] = prepared.train_weights.values[examples.row].astype(np.float32)
    return features


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
    """What ``fit`` produced: the model (best epoch's weights restored), the data it used,
    per-epoch logs. Evaluate it with :func:`tfsoft.validation.evaluate_splits`."""

    model: TwoTowerModel
    prepared: PreparedData
    history: dict[str, list[float]]
    best_epoch: int
    train_seconds: float
    examples: int
    strategy: object = None
    extra: dict = field(default_factory=dict)


def train(config: Config, *, prepared: PreparedData | None = None, callbacks=(), verbose: int = 0,
          deterministic: bool = False, strategy=None) -> TrainResult:
    """Train with ``fit`` (best epoch by ``train.monitor`` on validation) and return the model
    with the best epoch's weights restored, and its logs. No test evaluation happens here: the
    chosen checkpoint is evaluated once per split by :func:`tfsoft.validation.evaluate_splits`.

    Seeds Python, NumPy and TensorFlow with ``train.seed``. ``deterministic=True`` also turns
    on deterministic TensorFlow ops for the whole process (:mod:`tfsoft.determinism`); it
    covers every kernel created afterwards, so do it (or let ``tfsoft train`` do it) before
    other TensorFlow work in the process. ``strategy`` defaults to the one the config names
    (:func:`tfsoft.distribute.make_strategy`)."""
    from tfsoft.distribute import make_strategy

    strategy = strategy or make_strategy(config.distribute.strategy, config.distribute.cpu_replicas)
    make_deterministic(config.train.seed, ops=deterministic)
    prepared = prepared or prepare_data(config.data)
    if not config.model.query_tower.trainable:  # a baseline computed from training statistics
        with strategy.scope():
            model = build_model(config, prepared)
        create_variables(model, config)
        return TrainResult(model=model, prepared=prepared, history={}, best_epoch=0, train_seconds=0.0,
                           examples=0, strategy=strategy)
    features = training_examples(config, prepared)
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
        monitor=config.train.monitor, mode=monitor_mode(config.train.monitor),
        patience=config.train.early_stopping_patience or config.train.epochs, restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(dataset, epochs=config.train.epochs, validation_data=validation,
                        callbacks=[stopper, *callbacks], verbose=verbose,
                        steps_per_epoch=config.train.steps_per_epoch)
    seconds = time.perf_counter() - started
    return TrainResult(
        model=model, prepared=prepared, history={k: [float(x) for x in v] for k, v in history.history.items()},
        best_epoch=int(stopper.best_epoch) + 1, train_seconds=seconds, examples=len(features["target"]),
        strategy=strategy,
    )
