"""Registries: config sections -> components; unknown names and keys are errors; a new loss and
a new tower plug in with their own module and one registry line, without touching
training.py, exporter.py or cli.py."""

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest
from pydantic import Field

from tfsoft.config import OPTIONAL_RECIPE_KEYS, RECIPE_KEYS, apply_overrides, load_config, parse_config
from tfsoft.errors import ConfigError
from tfsoft.losses.sections import LOSSES, LossSection
from tfsoft.registry import Component, Registry
from tfsoft.towers.sections import CANDIDATE_TOWERS, QUERY_TOWERS, QueryTowerSection

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_registry_parses_names_and_mappings_and_rejects_the_rest():
    registry = Registry("widget")

    @registry.register
    class Knob(Component):
        name: Literal["knob"] = "knob"
        turns: int = Field(3, ge=0)

    assert registry.parse("knob").turns == 3
    assert registry.parse({"name": "knob", "turns": 5}).turns == 5
    with pytest.raises(ValueError, match=r"unknown widget 'dial'; registered: knob"):
        registry.parse("dial")
    with pytest.raises(ValueError, match=r"key 'colour' is not read by widget 'knob'; widget 'knob' reads: name, turns"):
        registry.parse({"name": "knob", "colour": "red"})
    with pytest.raises(ValueError, match=r"the widget section needs a 'name' \(knob\); got keys turns"):
        registry.parse({"turns": 1})
    with pytest.raises(ValueError, match=r"'turns': Input should be greater than or equal to 0"):
        registry.parse({"name": "knob", "turns": -1})
    with pytest.raises(ValueError, match="already registered"):
        registry.register(type("Other", (Component,), {"__annotations__": {"name": Literal["knob"]}, "name": "knob"}))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: str(path.relative_to(ROOT / "configs")))
def test_every_config_parses_and_builds(path):
    from tfsoft.training import build_model, prepare_data

    config = load_config(path, ["model.embedding_dim=8"])
    # a teacher source reads finished runs that a config only names (tests/test_soft_target_configs.py)
    teachers = config.soft_target is not None and bool(config.soft_target.teacher_runs_used())
    model = build_model(config, prepare_data(config.data), soft_target=not teachers)
    assert model.retrieval_loss.name == config.loss.name
    assert model.query_tower.name == "query_tower" and model.candidate_tower.name == "candidate_tower"


@pytest.mark.parametrize("loss, key", [("bpr", "temperature"), ("full_softmax", "num_negatives"),
                                       ("in_batch", "proposal"), ("sampled_softmax", "mixed_negatives"),
                                       ("bce", "log_q_correction")])
def test_a_key_the_chosen_loss_does_not_read_is_an_error_naming_the_loss_and_its_keys(loss, key):
    keys = ", ".join(LOSSES.get(loss).keys())
    with pytest.raises(ConfigError, match=rf"'loss': key '{key}' is not read by loss '{loss}'.*loss '{loss}' reads: {keys}"):
        parse_config({"loss": {"name": loss, key: 1}})


def test_unknown_loss_and_tower_names_are_errors():
    with pytest.raises(ConfigError, match=r"'loss': unknown loss 'softmax'; registered: full_softmax, sampled_softmax"):
        parse_config({"loss": {"name": "softmax"}})
    with pytest.raises(ConfigError, match=r"'model.query_tower': unknown query tower 'bert4rec'; registered: "):
        parse_config({"model": {"query_tower": "bert4rec"}})
    with pytest.raises(ConfigError, match=r"'model.candidate_tower': unknown candidate tower 'gru'; registered: id, features"):
        parse_config({"model": {"candidate_tower": "gru"}})
    with pytest.raises(ConfigError, match=r"unknown query tower 'bert4rec'"):
        apply_overrides({}, ["model.query_tower.name=bert4rec", "model.query_tower.num_layers=2"])


def test_moved_keys_say_where_they_live_now():
    with pytest.raises(ConfigError, match=r"model.dropout is now model.query_tower.dropout \(gru, sasrec\)"):
        parse_config({"model": {"query_tower": "gru", "dropout": 0.2}})
    with pytest.raises(ConfigError, match=r"key 'num_negatives' is not read by loss 'in_batch' \(in_batch calls its "
                                          r"extra sampled negatives 'mixed_negatives'\)"):
        parse_config({"loss": {"name": "in_batch", "num_negatives": 8}})
    with pytest.raises(ConfigError, match=r"key 'num_layers' is not read by query tower 'sasrec' \(SASRec's blocks"):
        parse_config({"model": {"query_tower": {"name": "sasrec", "num_layers": 2}}})


def test_each_key_reaches_its_component():
    config = parse_config({"loss": {"name": "in_batch", "mixed_negatives": 64, "mixed_proposal": "unigram",
                                    "mixed_beta": 0.5, "cross_replica": False, "log_q_correction": True},
                           "model": {"query_tower": {"name": "gru", "num_layers": 1, "dropout": 0.1}}})
    loss = config.loss.build()
    assert (loss.num_uniform_negatives, loss.mixed_proposal, loss.mixed_beta, loss.cross_replica, loss.log_q) == \
        (64, "unigram", 0.5, False, True)
    assert loss.samplers()["mixed"].proposal == "unigram"
    sampled = parse_config({"loss": {"name": "sampled_softmax", "correct_positive": True, "proposal": "uniform"}}).loss
    assert sampled.build().correct_positive and sampled.build().proposal == "uniform"
    bpr = parse_config({"loss": {"name": "bpr", "proposal": "log_uniform", "num_negatives": 3}}).loss.build()
    assert (bpr.proposal, bpr.num_negatives) == ("log_uniform", 3)
    # the default config records only what its loss reads: no sampled-softmax proposal for in-batch
    assert "proposal" not in parse_config({}).loss.model_dump()


def test_towers_declare_their_inputs():
    inputs = {name: QUERY_TOWERS.parse(name).query_inputs() for name in QUERY_TOWERS.names()}
    assert inputs == {"history_pooling": ("history",), "id": ("user",), "features": ("user",), "gru": ("history",),
                      "sasrec": ("history",), "lightgcn": ("user",), "popularity": ("history",),
                      "item_transition": ("history",), "item_knn": ("history",), "ngcf": ("user",),
                      "narm": ("history",), "nextitnet": ("history",), "caser": ("history",),
                      "youtube_dnn": ("history",), "nfm": ("history",)}
    assert QUERY_TOWERS.parse({"name": "history_pooling", "use_user_embedding": True}).query_inputs() == \
        ("user", "history")
    from tfsoft.export.exporter import query_inputs

    assert query_inputs(parse_config({"model": {"query_tower": "lightgcn"}}).model) == ("user_id",)


def test_per_position_training_needs_a_tower_with_per_position_outputs():
    with pytest.raises(ConfigError, match=r"needs a query tower with per-position outputs \(gru, sasrec, narm, nextitnet\); got 'id'"):
        parse_config({"data": {"example_mode": "user"}, "model": {"query_tower": "id"}})


def test_lightgcn_with_a_feature_candidate_tower_is_an_error(lastfm):
    from tfsoft.training import build_model, prepare_data

    config = parse_config({"model": {"query_tower": "lightgcn", "candidate_tower": "features"}})
    with pytest.raises(ConfigError, match=r"model.candidate_tower must be 'id', got 'features'"):
        build_model(config, prepare_data(config.data))


# ----------------------------------------------------- a throwaway loss and tower, end to end
class MarginSection(LossSection):
    """A hinge loss against the next row's positive (test only)."""

    name: Literal["test_margin"] = "test_margin"
    margin: float = 0.5

    def build(self):
        from tfsoft.backend import tf
        from tfsoft.losses.objectives import RetrievalLoss

        margin = self.margin

        class Margin(RetrievalLoss):
            name = "test_margin"

            def per_example(self, query, positive, positive_ids, source):
                assert "history" in source.features  # the step context gives the batch's features
                negative = tf.roll(positive, shift=1, axis=0)
                return tf.nn.relu(margin - tf.reduce_sum(query * (positive - negative), axis=-1))

        return Margin()


class LastItemsSection(QueryTowerSection):
    """Mean of the last ``count`` history items through a dense layer (test only)."""

    name: Literal["test_last_items"] = "test_last_items"
    inputs: ClassVar[tuple[str, ...]] = ("history",)
    count: int = 3

    def build(self, context, item_embedding=None):
        from tfsoft.backend import keras, tf

        count = self.count

        class LastItems(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.embedding = keras.layers.Embedding(context.num_items, context.dim)
                self.dense = keras.layers.Dense(context.dim)

            def call(self, inputs, training=False):
                history = inputs["history"][:, -count:]
                mask = tf.cast(history > 0, tf.float32)[..., None]
                pooled = tf.math.divide_no_nan(tf.reduce_sum(self.embedding(history) * mask, 1), tf.reduce_sum(mask, 1))
                return self.dense(pooled)

        return LastItems(name="query_tower")


@pytest.fixture
def throwaway_components():
    LOSSES.register(MarginSection)
    QUERY_TOWERS.register(LastItemsSection)
    yield
    LOSSES.unregister("test_margin")
    QUERY_TOWERS.unregister("test_last_items")


def test_a_registered_throwaway_loss_and_tower_train_without_touching_training_py(throwaway_components, tmp_path):
    from tfsoft.config import read_config_file
    from tfsoft.train_run import train_run

    payload = read_config_file(ROOT / "configs" / "lastfm_in_batch.yaml")
    payload["loss"] = {"name": "test_margin"}
    payload["model"]["query_tower"] = "test_last_items"
    config = parse_config(apply_overrides(payload, [
        "loss.margin=0.3", "model.query_tower.count=4", "model.similarity=dot", "train.epochs=2",
        "train.steps_per_epoch=20", "model.embedding_dim=8"]))
    metrics = train_run(config, tmp_path / "run", stream=open("/dev/null", "w"))
    assert metrics["test"]["num_queries"] > 0 and np.isfinite(metrics["test"]["ndcg@10"])
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.loss.margin == 0.3 and saved.model.query_tower.count == 4


def test_window_mode_needs_per_position_outputs_and_builds_sequence_towers():
    with pytest.raises(ConfigError, match=r"data.example_mode 'window' trains one query per position"):
        parse_config({"data": {"example_mode": "window"}})
    from tfsoft.training import build_model, prepare_data

    config = parse_config({"data": {"example_mode": "window"}, "model": {"query_tower": "sasrec", "embedding_dim": 8}})
    assert build_model(config, prepare_data(config.data)).query_tower.output_mode == "sequence"


def test_unset_recipe_keys_take_the_query_towers_recipe():
    class Recipe(LastItemsSection):
        name: Literal["test_recipe"] = "test_recipe"
        recipe: ClassVar[dict] = {"max_history": 7, "example_mode": "position", "embedding_dim": 24,
                                  "learning_rate": 0.02, "batch_size": 96, "temperature": 0.07}

    QUERY_TOWERS.register(Recipe)
    try:
        config = parse_config({"model": {"query_tower": "test_recipe"}})
        assert (config.data.max_history, config.data.example_mode, config.model.embedding_dim,
                config.train.learning_rate, config.train.batch_size) == (7, "position", 24, 0.02, 96)
        # an optional key: the softmax losses' temperature, unless the config sets it
        assert config.loss.temperature == 0.07
        assert parse_config({"model": {"query_tower": "test_recipe"},
                             "loss": {"name": "full_softmax"}}).loss.temperature == 0.07
        assert parse_config({"model": {"query_tower": "test_recipe"},
                             "loss": {"name": "in_batch", "temperature": 0.1}}).loss.temperature == 0.1
        assert not hasattr(parse_config({"model": {"query_tower": "test_recipe"}, "loss": "bpr"}).loss, "temperature")
        explicit = parse_config({"model": {"query_tower": "test_recipe"}, "data": {"max_history": 30},
                                 "train": {"learning_rate": 0.001, "batch_size": 512}})
        # what a config sets wins
        assert (explicit.data.max_history, explicit.train.learning_rate, explicit.train.batch_size) == (30, 0.001, 512)
        from tfsoft.config import config_to_yaml

        assert "max_history: 7" in config_to_yaml(config)  # the run records the resolved value
    finally:
        QUERY_TOWERS.unregister("test_recipe")
    required, optional = {key for _, key in RECIPE_KEYS}, {key for _, key in OPTIONAL_RECIPE_KEYS}
    for name in QUERY_TOWERS.names():  # every registered tower has a complete recipe, and no unknown key
        assert required <= set(QUERY_TOWERS.get(name).recipe) <= required | optional, name


def test_sequential_towers_default_to_their_measured_recipes():
    """The defaults bench/bench_recipes.py selected (README "Defaults that changed")."""
    gru = parse_config({"model": {"query_tower": "gru"}})
    assert (gru.model.query_tower.num_layers, gru.model.query_tower.dropout) == (1, 0.2)
    assert (gru.data.example_mode, gru.data.max_history, gru.model.embedding_dim, gru.train.learning_rate,
            gru.train.batch_size, gru.loss.temperature) == ("window", 50, 128, 3e-3, 128, 0.05)
    sasrec = parse_config({"model": {"query_tower": "sasrec"}})
    tower = sasrec.model.query_tower
    assert (tower.num_blocks, tower.num_heads, tower.dropout) == (2, 2, 0.1)
    assert (sasrec.data.example_mode, sasrec.data.max_history, sasrec.model.embedding_dim,
            sasrec.train.learning_rate, sasrec.train.batch_size) == ("window", 50, 128, 2e-3, 128)
    # the default loss: in-batch softmax with logQ correction and 1,024 mixed uniform negatives
    assert (sasrec.loss.name, sasrec.loss.temperature, sasrec.loss.log_q_correction, sasrec.loss.mixed_negatives,
            sasrec.loss.mixed_proposal) == ("in_batch", 0.1, True, 1024, "uniform")
    # towers without per-position outputs keep the previous global defaults
    pooling = parse_config({})
    assert (pooling.data.example_mode, pooling.data.max_history, pooling.model.embedding_dim,
            pooling.train.learning_rate, pooling.train.batch_size) == ("position", 20, 64, 1e-3, 256)
    # what a config sets wins, key by key
    old = parse_config({"model": {"query_tower": {"name": "gru", "num_layers": 2, "dropout": 0.5}, "embedding_dim": 64},
                        "data": {"example_mode": "position", "max_history": 20}, "train": {"learning_rate": 1e-3},
                        "loss": {"name": "in_batch", "log_q_correction": False, "mixed_negatives": 0}})
    assert (old.model.query_tower.num_layers, old.model.query_tower.dropout, old.model.embedding_dim) == (2, 0.5, 64)
    assert (old.data.example_mode, old.data.max_history, old.train.learning_rate, old.train.batch_size) == \
        ("position", 20, 1e-3, 128)
    assert (old.loss.log_q_correction, old.loss.mixed_negatives) == (False, 0)
