"""The ``til`` objective: TIL's settings, and the model whose ``train_step`` runs its bilevel step.

A :class:`TIL` holds configuration only (no Keras state, like every objective). Its weights,
clusters and second optimizer live in :class:`tfsoft.til.model.TILModel`, which
:meth:`TIL.make_model` builds (``tfsoft.training.build_model`` calls it when an objective has
one): a plain loss cannot host a step with two optimizers and a look-ahead.

Example:
    >>> loss = TIL(strategy="multi", num_clusters=8)
    >>> loss.name, loss.samplers()["negatives"].proposal
    ('til', 'uniform')
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses.objectives import RetrievalLoss, SamplerSpec
from tfsoft.losses.pairwise import bpr_loss

STRATEGIES = ("uni", "multi")
CLUSTERINGS = ("end_to_end", "kmeans")
GENERATOR_OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TIL(RetrievalLoss):
    """TIL-UI / TIL-MI / TIL-MIK settings (Wu et al., §4 and §5.4).

    Attributes:
        strategy: ``uni`` (Eq. 5) or ``multi`` (Eq. 6).
        num_negatives: N sampled negatives per positive (1 in the paper; N > 1 averages the N
            weighted triplets of an example, as ``bpr`` averages its pairs).
        proposal: where negatives come from; draws among the user's training items are masked.
        num_clusters: K item clusters (60 in the paper).
        alpha: α of Eq. 6 (weight of the cluster terms).
        gamma: γ of Eq. 13 (weight of the clustering KL, end-to-end only).
        inner_lr: η_in of the look-ahead Θ′ = Θ − η_in ∇_Θ J_in (Eq. 14; 1e-3 as the code).
        weight_activation: ``sigmoid`` (paper, Eq. 3) or ``softplus`` (authors' code).
        clustering: ``end_to_end`` (Eq. 7–9, learned centres Φ) or ``kmeans`` (TIL-MIK, §5.6.4).
        hidden_units: the generator's hidden width (64).
        generator_optimizer, generator_learning_rate: OPT_Λ.
        detach_state: the state s_uij enters the generator as a constant of Θ (see TILModel).
        pretrain_steps: steps before the clusters exist (no clustering loss, α-terms off).
        refresh_every: steps between refreshes of memberships and target T (10 in the paper).
        kmeans_iterations: Lloyd iterations per K-means run.
        weight_normalisation: ``none`` (paper) or ``batch_mean`` (w / mean over the batch's valid
            triplets: the authors' code's ``trick: norm``; the generator learns relative weights only).
        weighting: ``learned`` (TIL) or ``uniform`` (every w = 1, no generator, no look-ahead:
            BPR with the same seen-masked negatives, the baseline that isolates the weights).
    """

    strategy: str = "uni"
    num_negatives: int = 1
    proposal: str = "uniform"
    num_clusters: int = 60
    alpha: float = 1.0
    gamma: float = 0.01
    inner_lr: float = 1e-3
    weight_activation: str = "sigmoid"
    clustering: str = "end_to_end"
    hidden_units: int = 64
    generator_optimizer: str = "adam"
    generator_learning_rate: float = 1e-3
    detach_state: bool = True
    pretrain_steps: int = 0
    refresh_every: int = 10
    kmeans_iterations: int = 20
    weighting: str = "learned"
    weight_normalisation: str = "none"
    name = "til"

    def __post_init__(self) -> None:
        for key, value, allowed in (("strategy", self.strategy, STRATEGIES),
                                    ("clustering", self.clustering, CLUSTERINGS),
                                    ("generator_optimizer", self.generator_optimizer, GENERATOR_OPTIMIZERS),
                                    ("weight_activation", self.weight_activation, ("sigmoid", "softplus")),
                                    ("weighting", self.weighting, ("learned", "uniform")),
                                    ("weight_normalisation", self.weight_normalisation, ("none", "batch_mean"))):
            if value not in allowed:
                raise ConfigError(f"til: {key} must be one of {allowed}; got {value!r}")
        if self.weighting == "uniform" and self.multi:
            raise ConfigError("til: weighting 'uniform' has no weights to learn, so no states: use strategy 'uni'")
        for key in ("num_negatives", "num_clusters", "hidden_units", "refresh_every", "kmeans_iterations"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"til: {key} must be an integer >= 1; got {getattr(self, key)!r}")
        for key in ("inner_lr", "generator_learning_rate"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"til: {key} must be positive; got {getattr(self, key)!r}")

    @property
    def multi(self) -> bool:
        return self.strategy == "multi"

    def samplers(self):
        return {"negatives": SamplerSpec(self.proposal)}

    def per_example(self, query, positive, positive_ids, source):
        """Unweighted BPR (J_out's per-example term) for a caller that only has a step context;
        :class:`tfsoft.til.model.TILModel` trains with its own step and masks seen items."""
        negative_ids = source.per_example_negatives("negatives", tf.shape(query)[0], self.num_negatives)
        negative_scores = tf.einsum("bd,bnd->bn", query, source.embed(negative_ids))
        keep = tf.not_equal(negative_ids, positive_ids[:, tf.newaxis])
        return bpr_loss(tf.reduce_sum(query * positive, -1), negative_scores, keep)

    def make_model(self, query_tower, candidate_tower, prepared, **model_arguments):
        """The :class:`tfsoft.til.model.TILModel` of these towers, with the training split's
        (user, item) pairs (η_u's items and the seen-item mask)."""
        from tfsoft.til.model import TILModel
        from tfsoft.training import training_pairs

        users, items = training_pairs(prepared)
        return TILModel(query_tower, candidate_tower, self, train_users=users, train_items=items,
                        num_users=prepared.users.num_indices, **model_arguments)
