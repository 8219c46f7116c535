"""The config section of each tower (``model.query_tower``, ``model.candidate_tower``), with
its defaults, the inputs it reads and its builder.

Query towers are registered in :data:`QUERY_TOWERS`, candidate towers in
:data:`CANDIDATE_TOWERS`. A section reads only its own keys (anything else is an error naming
the tower and its keys), declares the features it reads (:attr:`QueryTowerSection.inputs`:
``user`` and/or ``history``; export, evaluation and the batch job ask the tower instead of
keeping lists), whether it emits a query per position (:attr:`sequence_outputs`, needed by
``data.example_mode: user|window``) and its recipe (the history length, example mode and
width, learning rate and batch size a config gets when it leaves them unset). TensorFlow is imported only when a
tower is built.

Adding a tower: its layer (``tfsoft/towers/<name>.py``), a section here with
``@QUERY_TOWERS.register`` (or ``@CANDIDATE_TOWERS.register``), and its tests.

Example:
    >>> tower = QUERY_TOWERS.parse({"name": "gru", "num_layers": 2})
    >>> tower.inputs, tower.dropout
    (('history',), 0.2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

from tfsoft.errors import ConfigError
from tfsoft.registry import Component, Registry

QUERY_TOWERS = Registry("query tower")
CANDIDATE_TOWERS = Registry("candidate tower")


@dataclass
class TowerContext:
    """What a tower builder may read: sizes, shared settings and the prepared data.

    Attributes:
        num_items, num_users: table rows (index 0 = OOV/padding on both sides).
        dim: ``model.embedding_dim``; l2: ``model.l2``.
        max_history: ``data.max_history``.
        output: ``last`` ([B, d]) or ``sequence`` ([B, L, d], ``data.example_mode: user|window``).
        tie_item_embeddings: share the candidate tower's item table with the query tower.
        prepared: the :class:`tfsoft.data.PreparedData` (graph edges, side features).
    """

    num_items: int
    num_users: int
    dim: int
    l2: float
    max_history: int
    output: str
    tie_item_embeddings: bool
    prepared: Any


class CandidateTowerSection(Component):
    """Base of a ``model.candidate_tower`` section."""

    def build(self, context: TowerContext):
        """The candidate layer (item ids -> [..., d]), named ``candidate_tower``."""
        raise NotImplementedError

    def item_table(self, layer):
        """The layer's item embedding table, for ``model.tie_item_embeddings``."""
        raise NotImplementedError


class QueryTowerSection(Component):
    """Base of a ``model.query_tower`` section.

    Attributes:
        inputs: features the tower reads, a subset of (``user``, ``history``).
        sequence_outputs: the tower can emit a query per position (``output="sequence"``).
        builds_candidates: the tower builds the candidate tower itself (graph models, baselines).
        trainable: False for baselines computed from training statistics: ``tfsoft train``
            skips ``fit`` and evaluates them as they are.
        recipe: what ``data.max_history``, ``data.example_mode``, ``model.embedding_dim``,
            ``train.learning_rate`` and ``train.batch_size`` are when a config leaves them unset: the settings this tower was measured with
            (``bench/bench_recipes.py``).
    """

    inputs: ClassVar[tuple[str, ...]] = ("history",)
    sequence_outputs: ClassVar[bool] = False
    builds_candidates: ClassVar[bool] = False
    trainable: ClassVar[bool] = True
    recipe: ClassVar[dict] = {"max_history": 20, "example_mode": "position", "embedding_dim": 64,
                              "learning_rate": 1e-3, "batch_size": 256}

    def query_inputs(self) -> tuple[str, ...]:
        """The features this configured tower reads (may depend on its keys)."""
        return self.inputs

    def build(self, context: TowerContext, item_embedding=None):
        """The query layer, named ``query_tower``; ``item_embedding`` is the tied table or None."""
        raise NotImplementedError

    def build_towers(self, context: TowerContext, candidate: CandidateTowerSection):
        """(query layer, candidate layer). The candidate tower is built first (variable order)."""
        candidate_layer = candidate.build(context)
        shared = candidate.item_table(candidate_layer) if context.tie_item_embeddings else None
        return self.build(context, item_embedding=shared), candidate_layer


def _feature_table(context: TowerContext, kind: str, key: str):
    table = getattr(context.prepared, f"{kind}_features")
    if table is None:
        raise ConfigError(f"model.{key} is 'features' but data.{kind}_features is not set")
    return table


# ------------------------------------------------------------------------ candidate towers
@CANDIDATE_TOWERS.register
class IdCandidateSection(CandidateTowerSection):
    """``id``: one embedding row per item."""

    name: Literal["id"] = "id"

    def build(self, context):
        from tfsoft.towers.id_tower import IdTower

        return IdTower(context.num_items, context.dim, feature="item", l2=context.l2, name="candidate_tower")

    def item_table(self, layer):
        return layer.embedding


@CANDIDATE_TOWERS.register
class FeatureCandidateSection(CandidateTowerSection):
    """``features``: item id + ``data.item_features`` -> MLP."""

    name: Literal["features"] = "features"
    use_id: bool = Field(True, description="include a per-item id embedding (off: pure content tower)")
    feature_dim: int = Field(16, ge=1, description="size of each categorical / multi-valued embedding")
    hidden_units: tuple[int, ...] = Field((128,), description="MLP layers before the output projection")

    def build(self, context):
        from tfsoft.towers.features import FeatureTower

        return FeatureTower(_feature_table(context, "item", "candidate_tower"), context.dim, feature="item",
                            use_id=self.use_id, feature_dim=self.feature_dim, hidden_units=self.hidden_units,
                            l2=context.l2, name="candidate_tower")

    def item_table(self, layer):
        if layer.id_embedding is None:
            raise ConfigError("model.tie_item_embeddings needs an item id table; "
                              "model.candidate_tower.use_id is false")
        return layer.id_embedding


# ---------------------------------------------------------------------------- query towers
@QUERY_TOWERS.register
class HistoryPoolingSection(QueryTowerSection):
    """``history_pooling``: SVD++-style pooled history (+ optional user embedding)."""

    name: Literal["history_pooling"] = "history_pooling"
    history_exponent: float = Field(1.0, ge=0, le=1, description="α1: 1 = mean, 0.5 = SVD++, 0 = sum")
    use_user_embedding: bool = Field(False, description="add a per-user embedding to the pooled history")

    def query_inputs(self):
        return ("user", "history") if self.use_user_embedding else ("history",)

    def build(self, context, item_embedding=None):
        from tfsoft.towers.history_pooling import HistoryPoolingTower

        return HistoryPoolingTower(context.num_items, context.dim,
                                   num_users=context.num_users if self.use_user_embedding else 0,
                                   history_exponent=self.history_exponent, l2=context.l2,
                                   item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class IdQuerySection(QueryTowerSection):
    """``id``: one embedding row per user (matrix factorisation)."""

    name: Literal["id"] = "id"
    inputs: ClassVar[tuple[str, ...]] = ("user",)

    def build(self, context, item_embedding=None):
        from tfsoft.towers.id_tower import IdTower

        return IdTower(context.num_users, context.dim, feature="user", l2=context.l2, name="query_tower")


@QUERY_TOWERS.register
class FeatureQuerySection(QueryTowerSection):
    """``features``: user id + ``data.user_features`` -> MLP."""

    name: Literal["features"] = "features"
    inputs: ClassVar[tuple[str, ...]] = ("user",)
    use_id: bool = Field(True, description="include a per-user id embedding")
    feature_dim: int = Field(16, ge=1, description="size of each categorical / multi-valued embedding")
    hidden_units: tuple[int, ...] = Field((128,), description="MLP layers before the output projection")

    def build(self, context, item_embedding=None):
        from tfsoft.towers.features import FeatureTower

        return FeatureTower(_feature_table(context, "user", "query_tower"), context.dim, feature="user",
                            use_id=self.use_id, feature_dim=self.feature_dim, hidden_units=self.hidden_units,
                            l2=context.l2, name="query_tower")


@QUERY_TOWERS.register
class GRUSection(QueryTowerSection):
    """``gru``: GRU4Rec (Hidasi et al. ICLR'16).

    Defaults are the recipe ``bench/bench_recipes.py`` selected on validation NDCG@10 across
    lastfm_small and ML-1M: one GRU layer, dropout 0.2, Adam 3e-3, batch 128, every sequence cut
    into windows of 50, and a softmax temperature of 0.05 when the config leaves
    ``loss.temperature`` unset (CSRec's settings, 2 layers and dropout 0.5 at 1e-3, were the
    defaults before; they lose about 5 points of validation NDCG@10 on lastfm_small at 40
    epochs; τ 0.05 gains about 1.9 points over 0.1 there, 3 seeds, and on ML-1M,
    ``bench/results/recipes_gru_temperature.json``).
    """

    name: Literal["gru"] = "gru"
    sequence_outputs: ClassVar[bool] = True
    recipe: ClassVar[dict] = {"max_history": 50, "example_mode": "window", "embedding_dim": 128,
                              "learning_rate": 3e-3, "batch_size": 128, "temperature": 0.05}
    num_layers: int = Field(1, ge=1, le=16, description="stacked GRUs (was 2)")
    dropout: float = Field(0.2, ge=0, lt=1, description="on the item embeddings and between GRU layers (was 0.5)")
    hidden_units: Optional[int] = Field(None, ge=1, description="GRU state size (default model.embedding_dim)")

    def build(self, context, item_embedding=None):
        from tfsoft.towers.gru import GRUTower

        return GRUTower(context.num_items, context.dim, hidden_units=self.hidden_units, num_layers=self.num_layers,
                        dropout=self.dropout, output=context.output, l2=context.l2, item_embedding=item_embedding,
                        name="query_tower")


@QUERY_TOWERS.register
class SASRecSection(QueryTowerSection):
    """``sasrec``: SASRec (Kang & McAuley ICDM'18).

    Defaults are the recipe ``bench/bench_recipes.py`` selected on validation NDCG@10 across
    lastfm_small and ML-1M: 2 blocks, 2 heads, dropout 0.1, Adam 1e-3, batch 128, windows of 50
    (CSRec's dropout 0.3 with position examples of 20 was the default before: dropout 0.1 gains
    0.7 points of validation NDCG@10 on lastfm_small and 1.7 on ML-1M at 13 epochs).
    """

    name: Literal["sasrec"] = "sasrec"
    sequence_outputs: ClassVar[bool] = True
    recipe: ClassVar[dict] = {"max_history": 50, "example_mode": "window", "embedding_dim": 128,
                              "learning_rate": 2e-3, "batch_size": 128}
    num_blocks: int = Field(2, ge=1, le=16, description="self-attention blocks")
    num_heads: int = Field(2, ge=1, le=64, description="attention heads")
    dropout: float = Field(0.1, ge=0, lt=1, description="embedding, attention and feed-forward dropout (was 0.3)")
    moved_keys: ClassVar[dict[str, str]] = {"num_layers": "SASRec's blocks are 'num_blocks'"}

    def build(self, context, item_embedding=None):
        from tfsoft.towers.sasrec import SASRecTower

        return SASRecTower(context.num_items, context.dim, max_length=context.max_history,
                           num_blocks=self.num_blocks, num_heads=self.num_heads, dropout=self.dropout,
                           output=context.output, l2=context.l2, item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class LightGCNSection(QueryTowerSection):
    """``lightgcn``: LightGCN (He et al. SIGIR'20); builds both towers over one propagated graph."""

    name: Literal["lightgcn"] = "lightgcn"
    inputs: ClassVar[tuple[str, ...]] = ("user",)
    builds_candidates: ClassVar[bool] = True
    num_layers: int = Field(2, ge=1, le=16, description="propagation layers K")

    def build_towers(self, context, candidate):
        from tfsoft.towers.lightgcn import LightGCNEncoder

        return _graph_towers(self, context, candidate, LightGCNEncoder, num_layers=self.num_layers)


# ------------------------------------------------------------- baselines (no training)
class _BaselineSection(QueryTowerSection):
    """A baseline scored from training statistics (:mod:`tfsoft.towers.baselines`): no ``fit``."""

    builds_candidates: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    def table(self, context: TowerContext):
        """The [V, V] item -> item score table, or None."""
        return None

    def build_towers(self, context, candidate):
        from tfsoft.towers.baselines import OneHotCandidateTower, ScoreTableTower, item_popularity

        if not isinstance(candidate, IdCandidateSection):
            raise ConfigError(f"model.query_tower '{self.name}' scores the catalog item by item; "
                              f"model.candidate_tower must be 'id', got '{candidate.name}'")
        train = context.prepared.split.train
        query = ScoreTableTower(item_popularity(train, context.num_items), self.table(context),
                                history_items=getattr(self, "history_items", 1), decay=getattr(self, "decay", 1.0),
                                name="query_tower")
        return query, OneHotCandidateTower(context.num_items, name="candidate_tower")


@QUERY_TOWERS.register
class PopularitySection(_BaselineSection):
    """``popularity``: every user gets the most popular training items."""

    name: Literal["popularity"] = "popularity"


@QUERY_TOWERS.register
class ItemTransitionSection(_BaselineSection):
    """``item_transition``: first-order transitions from the last few items, recency-weighted."""

    name: Literal["item_transition"] = "item_transition"
    history_items: int = Field(3, ge=1, le=1000, description="most recent history items whose successors count")
    decay: float = Field(0.5, gt=0, le=1, description="weight of each step back (1 = all equal)")

    def table(self, context):
        from tfsoft.towers.baselines import transition_probabilities

        return transition_probabilities(context.prepared.split.train, context.num_items)


@QUERY_TOWERS.register
class ItemKNNSection(_BaselineSection):
    """``item_knn``: item-item cosine over co-occurrence in training sequences."""

    name: Literal["item_knn"] = "item_knn"
    history_items: int = Field(3, ge=1, le=1000, description="most recent history items whose neighbours count")
    decay: float = Field(0.5, gt=0, le=1, description="weight of each step back (1 = all equal)")
    neighbors: Optional[int] = Field(100, ge=1, description="similar items kept per item (None: all)")

    def table(self, context):
        from tfsoft.towers.baselines import item_cosine

        return item_cosine(context.prepared.split.train, context.num_items, self.neighbors)


# ------------------------------------------- the seeds' remaining backbones (issue 14)
#: recipe of the new per-position towers (narm, nextitnet): provisional, not yet measured by
#: bench/bench_recipes.py — GRU4Rec's and SASRec's example mode and history at d = 64 and CSRec's Adam 1e-3
_SEQUENCE_RECIPE = {"max_history": 50, "example_mode": "window", "embedding_dim": 64, "learning_rate": 1e-3,
                    "batch_size": 128}


def _graph_towers(section: QueryTowerSection, context: TowerContext, candidate: CandidateTowerSection,
                  encoder_class, **keys):
    """(query, candidate) towers over one graph encoder (:class:`tfsoft.towers.lightgcn.GraphEncoder`
    subclass, named as the section) built on the training edges; the candidate section must be ``id``."""
    import numpy as np

    from tfsoft.towers.lightgcn import LightGCNItemTower, LightGCNUserTower

    if not isinstance(candidate, IdCandidateSection):
        raise ConfigError(f"model.query_tower '{section.name}' propagates its own item embeddings; "
                          f"model.candidate_tower must be 'id', got '{candidate.name}'")
    split = context.prepared.split
    encoder = encoder_class(context.num_users, context.num_items, context.dim,
                            users=np.repeat(split.train_user, split.train.lengths), items=split.train.values,
                            l2=context.l2, name=section.name, **keys)
    return LightGCNUserTower(encoder, name="query_tower"), LightGCNItemTower(encoder, name="candidate_tower")


@QUERY_TOWERS.register
class NGCFSection(QueryTowerSection):
    """``ngcf``: NGCF (Wang et al. SIGIR'19); both towers over one propagated graph, (K + 1)·d wide."""

    name: Literal["ngcf"] = "ngcf"
    inputs: ClassVar[tuple[str, ...]] = ("user",)
    builds_candidates: ClassVar[bool] = True
    num_layers: int = Field(3, ge=1, le=16, description="propagation layers L (the paper's default 3)")
    dropout: float = Field(0.1, ge=0, lt=1, description="message dropout on each layer's output")

    def build_towers(self, context, candidate):
        from tfsoft.towers.ngcf import NGCFEncoder

        return _graph_towers(self, context, candidate, NGCFEncoder, num_layers=self.num_layers, dropout=self.dropout)


@QUERY_TOWERS.register
class NARMSection(QueryTowerSection):
    """``narm``: NARM (Li et al. CIKM'17): a GRU read by its last state and by attention over its states."""

    name: Literal["narm"] = "narm"
    sequence_outputs: ClassVar[bool] = True
    recipe: ClassVar[dict] = _SEQUENCE_RECIPE
    hidden_units: int = Field(128, ge=1, description="GRU state size (CSRec: 128)")
    embedding_dropout: float = Field(0.25, ge=0, lt=1, description="on the item embeddings (NARM: 0.25)")
    dropout: float = Field(0.5, ge=0, lt=1, description="on [global; local] before the projection (NARM: 0.5)")

    def build(self, context, item_embedding=None):
        from tfsoft.towers.narm import NARMTower

        return NARMTower(context.num_items, context.dim, hidden_units=self.hidden_units,
                         embedding_dropout=self.embedding_dropout, dropout=self.dropout, output=context.output,
                         l2=context.l2, item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class NextItNetSection(QueryTowerSection):
    """``nextitnet``: NextItNet (Yuan et al. WSDM'19): residual blocks of dilated causal convolutions."""

    name: Literal["nextitnet"] = "nextitnet"
    sequence_outputs: ClassVar[bool] = True
    recipe: ClassVar[dict] = _SEQUENCE_RECIPE
    dilations: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1, description="dilation of each residual block")
    num_repeats: int = Field(1, ge=1, le=16, description="times the dilations are stacked")
    kernel_size: int = Field(3, ge=2, le=16, description="convolution width")
    dropout: float = Field(0.3, ge=0, lt=1, description="on the item embeddings (the paper: none; 0.3 measured on lastfm_small validation)")

    def build(self, context, item_embedding=None):
        from tfsoft.towers.nextitnet import NextItNetTower

        if min(self.dilations) < 1:
            raise ConfigError(f"model.query_tower.dilations must be positive; got {list(self.dilations)}")
        return NextItNetTower(context.num_items, context.dim, dilations=self.dilations, num_repeats=self.num_repeats,
                              kernel_size=self.kernel_size, dropout=self.dropout, output=context.output,
                              l2=context.l2, item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class CaserSection(QueryTowerSection):
    """``caser``: Caser (Tang & Wang WSDM'18): horizontal and vertical convolutions over the last L items."""

    name: Literal["caser"] = "caser"
    max_length: int = Field(5, ge=1, le=100, description="L: the most recent items read")
    num_horizontal: int = Field(16, ge=1, description="horizontal filters per height 1..L")
    num_vertical: int = Field(4, ge=1, description="vertical filters")
    dropout: float = Field(0.5, ge=0, lt=1, description="before the fully connected layer")
    use_user_embedding: bool = Field(False, description="concatenate a per-user embedding P_u")

    def query_inputs(self):
        return ("user", "history") if self.use_user_embedding else ("history",)

    def build(self, context, item_embedding=None):
        from tfsoft.towers.caser import CaserTower

        return CaserTower(context.num_items, context.dim, max_length=self.max_length,
                          num_horizontal=self.num_horizontal, num_vertical=self.num_vertical, dropout=self.dropout,
                          num_users=context.num_users if self.use_user_embedding else 0, l2=context.l2,
                          item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class YoutubeDNNSection(QueryTowerSection):
    """``youtube_dnn``: YoutubeDNN (Covington et al. RecSys'16): mean-pooled history (+ side features), ReLU MLP."""

    name: Literal["youtube_dnn"] = "youtube_dnn"
    hidden_units: tuple[int, ...] = Field((256, 128), description="the ReLU layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="after each ReLU layer")
    use_user_features: bool = Field(False, description="concatenate data.user_features")
    feature_dim: int = Field(16, ge=1, description="size of each side-feature embedding")

    def query_inputs(self):
        return ("user", "history") if self.use_user_features else ("history",)

    def build(self, context, item_embedding=None):
        from tfsoft.towers.youtube_dnn import YoutubeDNNTower

        features = _feature_table(context, "user", "query_tower") if self.use_user_features else None
        return YoutubeDNNTower(context.num_items, context.dim, hidden_units=self.hidden_units, dropout=self.dropout,
                               user_features=features, feature_dim=self.feature_dim, l2=context.l2,
                               item_embedding=item_embedding, name="query_tower")


@QUERY_TOWERS.register
class NFMSection(QueryTowerSection):
    """``nfm``: NFM (He & Chua SIGIR'17) as a query tower: bi-interaction pooling, then an MLP."""

    name: Literal["nfm"] = "nfm"
    hidden_units: tuple[int, ...] = Field((64,), description="the ReLU layers")
    dropout: float = Field(0.3, ge=0, lt=1, description="on the bi-interaction and after each ReLU layer")
    use_user_embedding: bool = Field(False, description="the user id as a feature (x_u = 1)")
    history_exponent: float = Field(1.0, ge=0, le=1, description="α: history items enter with x_j = |H|^-α")

    def query_inputs(self):
        return ("user", "history") if self.use_user_embedding else ("history",)

    def build(self, context, item_embedding=None):
        from tfsoft.towers.nfm import NFMTower

        return NFMTower(context.num_items, context.dim, hidden_units=self.hidden_units, dropout=self.dropout,
                        num_users=context.num_users if self.use_user_embedding else 0,
                        history_exponent=self.history_exponent, l2=context.l2, item_embedding=item_embedding,
                        name="query_tower")
