"""Full-ranking evaluation of a trained two-tower model, and its ``fit`` callback.

Connects the model (query/candidate embeddings) to the one evaluation protocol of
:mod:`tfsoft.evaluation`: every query is ranked against the whole catalog, index 0 (OOV and
padding) is never recommended.
"""

from __future__ import annotations

import numpy as np

from typing import Sequence

from tfsoft.backend import keras, tf
from tfsoft.config import Config
from tfsoft.data.sequences import query_features
from tfsoft.data.splits import Queries
from tfsoft.errors import RunError
from tfsoft.evaluation import EvaluationResult, evaluate_full_ranking

SPLITS = ("validation", "test")


def exclude_seen(config: Config) -> bool:
    """``evaluation.exclude_seen``, defaulting to on for ratio/temporal splits and off for
    leave-one-out (as in the papers)."""
    if config.evaluation.exclude_seen is not None:
        return config.evaluation.exclude_seen
    return config.data.split != "leave_one_out"


def embed_queries(model, features: dict[str, np.ndarray], batch_size: int = 2048) -> np.ndarray:
    """Query embeddings for scoring, computed in batches: [Q, d] float32."""
    dataset = tf.data.Dataset.from_tensor_slices(features).batch(batch_size)
    return np.concatenate([model(batch, training=False).numpy() for batch in dataset], axis=0)


def evaluate_model(
    model,
    queries: Queries,
    *,
    max_history: int,
    ks=(10, 20),
    exclude_seen: bool = False,
    item_counts: np.ndarray | None = None,
) -> EvaluationResult:
    """Rank the whole catalog for every query and compute Recall/NDCG/MRR/HitRate@K.

    Args:
        model: a :class:`tfsoft.model.TwoTowerModel` (anything with ``__call__(features)`` and
            ``candidate_embeddings()``).
        queries: validation or test queries of a split.
        max_history: history length the query tower reads.
        exclude_seen: remove each query's history items from its ranking (ratio/temporal
            splits; off for leave-one-out, as in the papers).
        item_counts: training counts per item, for the long-tail breakdown.
    """
    query = embed_queries(model, query_features(queries.user, queries.history, max_history))
    catalog = model.candidate_embeddings().numpy()
    valid = np.ones(len(catalog), dtype=bool)
    valid[0] = False
    return evaluate_full_ranking(
        query, catalog, list(queries.targets),
        exclude=list(queries.history) if exclude_seen else None,
        ks=tuple(ks), item_counts=item_counts, valid_items=valid,
    )


class RankingValidation(keras.callbacks.Callback):
    """Adds full-ranking validation metrics (``val_recall@10``, ``val_ndcg@10``, ...) to the
    epoch logs. Pass it as ``validation_data`` to :meth:`TwoTowerModel.fit`, which runs it
    before every other callback so EarlyStopping/ModelCheckpoint can monitor its metrics.

    Args:
        queries: the split's validation queries.
        max_history: history length the query tower reads.
        ks: cut-offs.
        exclude_seen: see :func:`evaluate_model`.
        loss_data: optional ``tf.data`` validation set whose loss Keras reports as ``val_loss``.
        prefix: metric name prefix.
    """

    def __init__(self, queries: Queries, *, max_history: int, ks=(10, 20), exclude_seen: bool = False,
                 loss_data=None, prefix: str = "val_"):
        super().__init__()
        self.queries, self.max_history, self.ks = queries, max_history, tuple(ks)
        self.exclude_seen, self.loss_data, self.prefix = exclude_seen, loss_data, prefix
        self.history: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        result = evaluate_model(self.model, self.queries, max_history=self.max_history, ks=self.ks,
                                exclude_seen=self.exclude_seen)
        metrics = {f"{self.prefix}{name}": float(value) for name, value in result.metrics.items()}
        self.history.append(metrics)
        if logs is not None:
            logs.update(metrics)


def evaluation_payload(result: EvaluationResult) -> dict:
    """One split's entry of ``metrics.json``: every metric (fractions), ``num_queries`` and the
    per-popularity-group ``long_tail_recall`` (K -> 10 contributions summing to Recall@K)."""
    payload = result.to_dict()
    out = dict(payload["metrics"])
    out["num_queries"] = payload["num_queries"]
    if "long_tail_recall" in payload:
        out["long_tail_recall"] = payload["long_tail_recall"]
    return out


def evaluate_splits(model, config: Config, prepared, splits: Sequence[str] = SPLITS) -> dict:
    """The one evaluation of a trained model: full-ranking metrics on each named split, once.

    ``tfsoft train``, ``tfsoft evaluate`` and the benchmarks all publish numbers through it.

    Returns:
        split -> :func:`evaluation_payload` (``recall@K``, ``ndcg@K``, ..., ``num_queries``,
        ``long_tail_recall``).
    """
    out = {}
    for split in splits:
        if split not in SPLITS:
            raise RunError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        result = evaluate_model(model, getattr(prepared.split, split), max_history=config.data.max_history,
                                ks=config.evaluation.ks, exclude_seen=exclude_seen(config),
                                item_counts=prepared.item_counts)
        out[split] = evaluation_payload(result)
    return out
