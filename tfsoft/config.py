"""The configuration schema: one pydantic model per YAML section; every default lives here.

Parsed once at the edge (CLI, benchmarks) into typed objects; library code takes explicit
arguments. Unknown keys, wrong types and out-of-range values are errors that name the key and
the allowed values (:func:`load_config`, :func:`parse_config`).

The key names below are a public contract (``data.path``, ``model.query_tower``,
``loss.name``, ``loss.temperature``, ``loss.log_q_correction``, ``loss.num_negatives``,
``train.epochs``, ``train.batch_size``, ``train.learning_rate``, ``train.seed``,
``distribute.strategy``, ...).
"""

from __future__ import annotations

import copy
import os
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tfsoft.errors import ConfigError
from tfsoft.losses.sections import LOSSES
from tfsoft.registry import ComponentError, Registry
from tfsoft.teachers.sections import SOFT_TARGETS
from tfsoft.towers.sections import CANDIDATE_TOWERS, QUERY_TOWERS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FeatureFileConfig(_Section):
    """Per-id side features in their own file (e.g. ml-100k.item), joined by id."""

    path: str = Field(..., description="CSV/TSV path; a bare file name is also looked up in the data folders")
    id_column: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    multivalued: dict[str, str] = Field(default_factory=dict, description="column -> token separator")


class DataConfig(_Section):
    path: str = Field("lastfm_small", description="CSV/Parquet path or a registered dataset name")
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: Optional[str] = None
    weight_column: Optional[str] = None
    delimiter: Optional[str] = None
    split: Literal["leave_one_out", "ratio", "temporal"] = "leave_one_out"
    window: Optional[int] = Field(None, ge=3, description="leave-one-out over windows of this length (CSRec)")
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    max_history: Optional[int] = Field(None, ge=1, le=1000, description="history items a query reads (default: the query tower's recipe)")
    min_user_interactions: int = Field(0, ge=0)
    min_item_interactions: int = Field(0, ge=0)
    example_mode: Optional[Literal["position", "user", "window"]] = Field(
        None, description="default: the query tower's recipe; position: one example per interaction; user: each "
                          "sequence's last max_history positions at once; window: every sequence cut into windows of max_history, "
                                "every position a target")
    user_features: Optional[FeatureFileConfig] = None
    item_features: Optional[FeatureFileConfig] = None


#: keys that moved into a tower's own section (old key -> where it lives now)
_MOVED_MODEL_KEYS = {
    "num_layers": "model.query_tower.num_layers (gru, lightgcn) or model.query_tower.num_blocks (sasrec)",
    "num_heads": "model.query_tower.num_heads (sasrec)",
    "dropout": "model.query_tower.dropout (gru, sasrec)",
    "hidden_units": "model.query_tower.hidden_units (gru)",
    "history_exponent": "model.query_tower.history_exponent (history_pooling)",
    "use_user_embedding": "model.query_tower.use_user_embedding (history_pooling)",
}


def _component(registry, default: str):
    """A config field holding a registered component's section (a bare name or a mapping)."""
    return Field(default_factory=lambda: registry.parse(default),
                 description=f"a {registry.kind} (a name, or a mapping with 'name' and the {registry.kind}'s keys)")


class ModelConfig(_Section):
    query_tower: Any = _component(QUERY_TOWERS, "history_pooling")
    candidate_tower: Any = _component(CANDIDATE_TOWERS, "id")
    embedding_dim: Optional[int] = Field(None, ge=1, le=4096, description="d of both towers' outputs (default: the query tower's recipe)")
    similarity: Literal["dot", "cosine"] = "cosine"
    score_similarity: Optional[Literal["dot", "cosine"]] = None
    tie_item_embeddings: bool = Field(False, description="share the item table between history and candidate towers (off: items do not repeat in most logs, and a tied query sits next to its own history)")
    l2: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, payload):
        if isinstance(payload, dict):
            moved = [key for key in payload if key in _MOVED_MODEL_KEYS]
            if moved:
                where = "; ".join(f"model.{key} is now {_MOVED_MODEL_KEYS[key]}" for key in moved)
                raise ValueError(f"{where}: each tower owns its keys, e.g. query_tower: {{name: gru, num_layers: 2}}")
        return payload

    @field_validator("query_tower", mode="before")
    @classmethod
    def _query_tower(cls, value):
        return QUERY_TOWERS.parse(value, "model.query_tower", default="history_pooling")

    @field_validator("candidate_tower", mode="before")
    @classmethod
    def _candidate_tower(cls, value):
        return CANDIDATE_TOWERS.parse(value, "model.candidate_tower", default="id")


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1)
    batch_size: Optional[int] = Field(None, ge=1, description="examples (windows, in window/user mode) per step; default: the query tower's recipe")
    learning_rate: Optional[float] = Field(None, gt=0, description="default: the query tower's recipe")
    optimizer: Literal["adam", "lazy_adam", "adagrad", "sgd"] = Field(
        "adam", description="adam: fused ResourceApplyAdam kernel (tf_keras legacy Adam), same update as keras.optimizers.Adam; "
                            "lazy_adam: updates only the embedding rows of the batch (large catalogs, tfsoft.optimizers.LazyAdam)")
    dense_gradients: Literal["auto", "always", "never"] = Field(
        "auto", description="embedding-table gradients as one dense tensor (tfsoft.gradients): auto = only for optimizers whose update is the same either way, when they update every row anyway (one replica) or the batch's slices hold as many rows as the table")
    seed: int = 0
    early_stopping_patience: Optional[int] = Field(5, ge=1)
    monitor: str = "val_ndcg@10"
    steps_per_epoch: Optional[int] = Field(None, ge=1)
    deterministic: bool = Field(True, description="tfsoft train/evaluate: deterministic TensorFlow ops (same seed -> same metrics)")


class EvaluationConfig(_Section):
    ks: tuple[int, ...] = (10, 20)
    exclude_seen: Optional[bool] = Field(None, description="default: on for ratio/temporal, off for leave-one-out")

    @model_validator(mode="after")
    def _positive_ks(self):
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive cut-offs; got {list(self.ks)}")
        return self


class ScannConfig(_Section):
    num_leaves: Optional[int] = Field(None, ge=1, description="k-means tree partitions (default ≈ sqrt(catalog))")
    num_leaves_to_search: Optional[int] = Field(None, ge=1, description="partitions searched per query (default: a quarter, at least 8)")
    training_sample_size: Optional[int] = Field(None, ge=1, description="points that train the tree (default: all, at most 250,000)")
    dimensions_per_block: int = Field(2, ge=1, le=16, description="product-quantisation dimensions per block")
    anisotropic_quantization_threshold: float = Field(0.2, ge=0, description="η of ScaNN's score-aware quantisation loss")
    reorder_num_neighbors: Optional[int] = Field(None, ge=1, description="candidates re-scored exactly (default max(4k, 100))")


class ExportConfig(_Section):
    index: Literal["brute_force", "scann"] = Field("brute_force", description="brute_force: exact, stock TF ops; scann: approximate, needs ScaNN's ops in the server")
    k: int = Field(100, ge=1, le=10000, description="items returned per query")
    min_recall: float = Field(0.95, ge=0, le=1, description="refuse a ScaNN index whose recall@k against exact search on real queries is lower")
    recall_queries: int = Field(2000, ge=1, description="real queries (test split) used to measure the index's recall@k")
    warmup_requests: int = Field(100, ge=1, le=1000, description="records in assets.extra/tf_serving_warmup_requests")
    scann: ScannConfig = ScannConfig()


class DistributeConfig(_Section):
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    cpu_replicas: Optional[int] = Field(None, ge=1, le=64, description="mirrored: split the CPU into this many logical devices (tests and CPU-only machines)")


#: the keys a query tower's recipe fills when a config leaves them unset
RECIPE_KEYS = (("data", "max_history"), ("data", "example_mode"), ("model", "embedding_dim"),
               ("train", "learning_rate"), ("train", "batch_size"))
#: keys a recipe may fill: set only when the recipe names them and the config's section has the
#: key and leaves it unset (``loss.temperature`` of the softmax losses; BPR has none)
OPTIONAL_RECIPE_KEYS = (("loss", "temperature"),)


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: Any = _component(LOSSES, "in_batch")
    soft_target: Any = Field(None, description="a soft-target source (a name, or a mapping with 'name' and its keys); "
                                               "None: the loss alone")
    train: TrainConfig = TrainConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    distribute: DistributeConfig = DistributeConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, value):
        return LOSSES.parse(value, "loss", default="in_batch")

    @field_validator("soft_target", mode="before")
    @classmethod
    def _soft_target(cls, value):
        return None if value is None else SOFT_TARGETS.parse(value, "soft_target")

    @model_validator(mode="after")
    def _soft_target_needs_a_softmax(self):
        if self.soft_target is not None and not self.loss.softmax:
            softmax = [name for name in LOSSES.names() if LOSSES.get(name).softmax]
            raise ValueError(f"soft_target '{self.soft_target.name}' reuses a softmax loss's candidates "
                             f"({', '.join(softmax)}); got loss '{self.loss.name}'")
        return self

    @model_validator(mode="after")
    def _tower_recipe(self):
        """Keys left unset take the query tower's recipe (:attr:`QueryTowerSection.recipe`): every
        key of :data:`RECIPE_KEYS`, and those of :data:`OPTIONAL_RECIPE_KEYS` the recipe names."""
        recipe = self.model.query_tower.recipe
        for section, key in RECIPE_KEYS:
            if getattr(getattr(self, section), key) is None:
                setattr(getattr(self, section), key, recipe[key])
        for section, key in OPTIONAL_RECIPE_KEYS:
            target = getattr(self, section)
            if key in recipe and key in type(target).model_fields and key not in target.model_fields_set:
                setattr(target, key, recipe[key])
        return self

    @model_validator(mode="after")
    def _per_position_queries(self):
        tower = self.model.query_tower
        if self.data.example_mode in ("user", "window") and not tower.sequence_outputs:
            capable = [name for name in QUERY_TOWERS.names() if QUERY_TOWERS.get(name).sequence_outputs]
            raise ValueError(f"data.example_mode '{self.data.example_mode}' trains one query per position, which "
                             f"needs a query tower "
                             f"with per-position outputs ({', '.join(capable)}); got '{tower.name}'")
        return self

    @model_validator(mode="after")
    def _monitor_is_reported(self):
        reported = ["loss", *(f"val_{name}@{k}" for k in self.evaluation.ks
                              for name in ("recall", "ndcg", "mrr", "hit_rate"))]
        if self.train.monitor not in reported:
            raise ValueError(f"train.monitor: got {self.train.monitor!r}; the epoch logs report {', '.join(reported)}")
        return self


#: fields that hold a registered component's section
_COMPONENT_FIELDS = {(Config, "loss"): LOSSES, (ModelConfig, "query_tower"): QUERY_TOWERS,
                     (ModelConfig, "candidate_tower"): CANDIDATE_TOWERS, (Config, "soft_target"): SOFT_TARGETS}


def monitor_mode(monitor: str) -> str:
    """``min`` for a loss being monitored, ``max`` for a ranking metric (``val_ndcg@10``)."""
    return "min" if monitor.endswith("loss") else "max"


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            section = item["loc"][:-1]
            model = Config
            for part in section:
                model = _section_model(model.model_fields[part].annotation)
            allowed = ", ".join(model.model_fields)
            lines.append(f"unknown key '{key}'; allowed keys{' in ' + '.'.join(section) if section else ''}: {allowed}")
        elif not key:  # a check across sections (model_validator on Config)
            lines.append(item["msg"].removeprefix("Value error, "))
        elif isinstance(item.get("ctx", {}).get("error"), ComponentError):  # names its own key path
            lines.append(str(item["ctx"]["error"]))
        elif item["type"] == "value_error":  # a moved key
            lines.append(f"'{key}': {item['msg'].removeprefix('Value error, ')}")
        elif item["type"] == "literal_error":
            lines.append(f"'{key}': got {item['input']!r}; {item['msg'].lower()}")
        else:
            lines.append(f"'{key}': {item['msg']} (got {item.get('input')!r})")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


def parse_config(payload: dict | None, source: str = "configuration") -> Config:
    """Validate a nested dict (e.g. parsed YAML) into a :class:`Config`."""
    try:
        return Config.model_validate(payload or {})
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def _section_model(annotation):
    """The pydantic section class behind a field annotation (``Optional[X]`` -> X), else None."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _component_registry(model, field: str) -> Registry | None:
    """The registry behind a component field (``loss``, ``model.query_tower``, ...), else None."""
    return _COMPONENT_FIELDS.get((model, field))


def _is_mapping(annotation) -> bool:
    return typing.get_origin(annotation) is dict or annotation is dict


def _parse_value(text: str):
    """A YAML scalar/flow value; text that is blank or not YAML (``,``, ``|``) stays a string."""
    if not text.strip():
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(payload: dict | None, overrides: Sequence[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (the CLI's ``--set``) to a nested config dict.

    The value is parsed as a YAML scalar or flow collection (``3`` -> int, ``false`` -> bool,
    ``null`` -> None, ``[10, 20]`` -> list, ``1e-3`` -> the string "1e-3"), and pydantic then
    coerces it to the field's type (``"1e-3"`` -> 0.001 for a float field) when the result is
    validated with :func:`parse_config`; text that is not YAML stays a string. Keys are
    checked against the schema: an unknown key is an error naming the key and the allowed ones.

    Example:
        >>> apply_overrides({"train": {"epochs": 40}}, ["train.epochs=3", "loss.log_q_correction=false"])
        {'train': {'epochs': 3}, 'loss': {'log_q_correction': False}}

    Returns:
        A new dict; ``payload`` is not modified.
    """
    result = copy.deepcopy(payload or {})
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects dotted.key=value (e.g. train.epochs=3); got {override!r}")
        model, node = Config, result  # model None: inside a free-form mapping (e.g. multivalued)
        for depth, part in enumerate(parts):
            dotted = ".".join(parts[: depth + 1])
            if model is not None and part not in model.model_fields:
                section = ".".join(parts[:depth])
                raise ConfigError(f"--set {override}: unknown key '{dotted}'; allowed keys"
                                  f"{' in ' + section if section else ''}: {', '.join(model.model_fields)}")
            if depth == len(parts) - 1:
                break
            registry = _component_registry(model, part)
            if registry is not None:  # a component: its keys are those of the component named there
                current = node.get(part)
                if current is None and model.model_fields[part].default_factory is None:
                    raise ConfigError(f"--set {override}: no {part} is set; choose one first with --set "
                                      f"{part}=NAME ({', '.join(registry.names())})")
                if not isinstance(current, dict):
                    current = {"name": current if isinstance(current, str) else
                               model.model_fields[part].default_factory().name}
                    node[part] = current
                child_model = registry.section_class(current)
                if child_model is None:
                    raise ConfigError(f"--set {override}: unknown {registry.kind} {current.get('name')!r} in "
                                      f"'{'.'.join(parts[:depth + 1])}.name'; registered: {', '.join(registry.names())}")
                model, node = child_model, current
                continue
            annotation = model.model_fields[part].annotation if model is not None else dict
            child_model = _section_model(annotation)
            if child_model is None and not _is_mapping(annotation):
                raise ConfigError(f"--set {override}: '{dotted}' is a value, not a section; use --set {dotted}=VALUE")
            if not isinstance(node.get(part), dict):
                node[part] = {}
            model, node = child_model, node[part]
        node[parts[-1]] = _parse_value(text)
    return result


def config_to_yaml(config: Config) -> str:
    """The complete configuration (every default filled in) as YAML that :func:`load_config` reads back."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def read_config_file(path: str | os.PathLike) -> dict:
    """The raw mapping of a YAML config file (not validated yet: see :func:`parse_config`)."""
    path = Path(path)
    try:
        payload = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    if payload is not None and not isinstance(payload, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections; got {type(payload).__name__}")
    return payload or {}


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a YAML config file, after applying ``dotted.key=value`` overrides."""
    payload = apply_overrides(read_config_file(path), overrides)
    source = f"'{path}'" + (" with --set " + " ".join(overrides) if overrides else "")
    return parse_config(payload, source)
