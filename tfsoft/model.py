"""The two-tower Keras model: ``train_step``/``test_step`` wire towers to a retrieval loss.

``model.compile(optimizer=...)`` and ``model.fit(dataset, validation_data=..., callbacks=[...])``
work unchanged (Keras' ``Model.train_step`` contract: loss under a ``GradientTape``, gradients
applied by the compiled optimizer, metrics updated, a dict returned), so ModelCheckpoint,
EarlyStopping, TensorBoard and ``tf.distribute`` strategies work as for any Keras model.

Batches are dicts of features. The query tower reads what it needs (``user``, ``history``,
...); ``target`` holds the positive item index ([B], or [B, L] for sequence towers that emit a
query per position, 0 = padding); ``weight`` (optional) is the per-example sample weight.

Example:
    >>> from tfsoft import losses, towers
    >>> items = towers.IdTower(num_indices=100, dim=8)
    >>> query = towers.HistoryPoolingTower(num_items=100, dim=8, item_embedding=items.embedding)
    >>> model = TwoTowerModel(query, items, losses.InBatchSoftmax(temperature=0.1), num_items=100)
    >>> model.compile(optimizer="adam")
"""

from __future__ import annotations

import numpy as np

from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.gradients import check_dense_policy, prepare_gradients
from tfsoft.losses.logits import SIMILARITIES, prepare_embeddings
from tfsoft.losses.objectives import RetrievalLoss
from tfsoft.losses.reduction import weighted_mean
from tfsoft.sampling import NegativeSampler, StreamingFrequencyEstimator, make_proposal


class _CandidateSource:
    """The :class:`tfsoft.losses.objectives.CandidateSource` of one training/eval step."""

    def __init__(self, model: "TwoTowerModel", training: bool, local_batch):
        self._model, self._training, self._local_batch = model, training, local_batch
        self.num_indices = model.num_items

    def embed(self, ids):
        return prepare_embeddings(self._model.candidate_tower(ids, training=self._training), self._model.similarity)

    def catalog(self):
        return self.embed(tf.range(self._model.num_items, dtype=tf.int64))

    def valid_items(self):
        return tf.range(self._model.num_items) > 0

    def gather(self, tensor):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tensor
        return context.all_gather(tf.identity(tensor), axis=0)

    def replica_offset(self):
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return 0
        return tf.cast(context.replica_id_in_sync_group, tf.int32) * self._local_batch

    def log_item_probability(self, ids):
        estimator = self._model.frequency_estimator
        if estimator is not None:
            # p_j per example of a batch of |ids| positives: log p = −log δ_j − log |ids|.
            return estimator.log_probability(ids, tf.shape(ids)[0])
        return tf.gather(self._model._log_item_probability, tf.cast(ids, tf.int64))

    def sampler(self, key):
        return self._model.samplers[key]


class TwoTowerModel(keras.Model):
    """A query tower and a candidate tower trained with a retrieval loss.

    Args:
        query_tower: Keras layer, features dict -> [B, d] (or [B, L, d] per position).
        candidate_tower: Keras layer, item ids -> [..., d]; must embed the whole catalog.
        loss: a :class:`tfsoft.losses.RetrievalLoss` (InBatchSoftmax, SampledSoftmax, ...).
        num_items: item indices in the catalog, OOV/padding row 0 included.
        item_counts: [num_items] training counts: unigram proposals and in-batch logQ
            (unless the loss estimates frequencies while streaming).
        similarity: ``cosine`` or ``dot`` during training.
        score_similarity: similarity at inference; default = ``similarity``. The SSM paper
            (Table 4) finds cosine for training with the inner product for scoring best.
        seed: seed of the negative samplers.
        dense_gradients: how embedding-table gradients reach the optimizer
            (:mod:`tfsoft.gradients`): ``auto`` (dense only for optimizers whose update is
            the same either way, when they update every row anyway, e.g. Adam on one replica,
            or the batch's slices hold as many rows as the table), ``always``, ``never``
            (Keras' default sparse slices).
    """

    def __init__(self, query_tower, candidate_tower, loss: RetrievalLoss, *, num_items: int,
                 item_counts=None, similarity: str = "cosine", score_similarity: str | None = None,
                 seed: int | None = None, dense_gradients: str = "auto", **kwargs):
        super().__init__(**kwargs)
        check_dense_policy(dense_gradients)
        self.dense_gradients = dense_gradients
        if similarity not in SIMILARITIES:
            raise ConfigError(f"similarity must be one of {SIMILARITIES}; got {similarity!r}")
        score_similarity = score_similarity or similarity
        if score_similarity not in SIMILARITIES:
            raise ConfigError(f"score_similarity must be one of {SIMILARITIES}; got {score_similarity!r}")
        if not isinstance(loss, RetrievalLoss):
            raise ConfigError(f"loss must be a tfsoft.losses objective (e.g. InBatchSoftmax()); got {type(loss).__name__}")
        self.query_tower, self.candidate_tower, self.retrieval_loss = query_tower, candidate_tower, loss
        self.num_items, self.similarity, self.score_similarity = int(num_items), similarity, score_similarity
        if item_counts is not None:
            item_counts = np.asarray(item_counts, dtype=np.float64)
            if item_counts.shape != (self.num_items,):
                raise ConfigError(f"item_counts must have shape ({self.num_items},); got {item_counts.shape}")
        self.item_counts = item_counts
        counts = item_counts if item_counts is not None else np.r_[0.0, np.ones(self.num_items - 1)]
        probability = np.maximum(counts, 1e-3) / max(counts.sum(), 1.0)
        self._log_item_probability = tf.constant(np.log(probability), dtype=tf.float32)
        self.samplers = {
            key: NegativeSampler(make_proposal(spec.proposal, num_indices=self.num_items, item_counts=item_counts,
                                               beta=spec.beta), seed=seed)
            for key, spec in loss.samplers().items()
        }
        self.frequency_estimator = (
            StreamingFrequencyEstimator(num_buckets=max(self.num_items, 1), learning_rate=0.01)
            if getattr(loss, "frequency", "counts") == "streaming" else None
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    # ----------------------------------------------------------------- inference
    def call(self, features, training=False):
        """Query embeddings for scoring (normalised when ``score_similarity`` is cosine)."""
        query = self.query_tower(features, training=training)
        if query.shape.rank == 3:  # a query per position: the last one has read the whole history
            query = query[:, -1]
        return prepare_embeddings(query, self.score_similarity) if self.score_similarity == "cosine" else query

    def candidate_embeddings(self, ids=None):
        """Candidate embeddings for scoring, [V, d] for the whole catalog by default."""
        ids = tf.range(self.num_items, dtype=tf.int64) if ids is None else ids
        candidates = self.candidate_tower(ids, training=False)
        return prepare_embeddings(candidates, self.score_similarity) if self.score_similarity == "cosine" else candidates

    # ------------------------------------------------------------------ training
    def _per_example_loss(self, features, training):
        target = tf.cast(features["target"], tf.int64)
        query = self.query_tower(features, training=training)
        weight = features.get("weight")
        if target.shape.rank == 2:  # one query per position: flatten, drop padding
            keep = tf.reshape(tf.not_equal(target, 0), [-1])
            query = tf.boolean_mask(tf.reshape(query, [-1, tf.shape(query)[-1]]), keep)
            if weight is not None:
                weight = tf.boolean_mask(tf.reshape(weight, [-1]), keep)
            target = tf.boolean_mask(tf.reshape(target, [-1]), keep)
        positive = prepare_embeddings(self.candidate_tower(target, training=training), self.similarity)
        query = prepare_embeddings(query, self.similarity)
        source = _CandidateSource(self, training, local_batch=tf.shape(target)[0])
        if training and self.frequency_estimator is not None:
            self.frequency_estimator.update(source.gather(target))
        per_example = self.retrieval_loss.per_example(query, positive, target, source)
        return per_example, weight

    def _total_loss(self, features, training):
        per_example, weight = self._per_example_loss(features, training)
        loss = weighted_mean(per_example, weight)
        if self.losses:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss += tf.add_n(self.losses) / replicas
        return loss

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self._total_loss(data, training=True)
        variables = self.trainable_variables
        gradients = prepare_gradients(tape.gradient(loss, variables), variables, self.optimizer, self.dense_gradients)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
        # Each replica's loss is divided by the global batch: × replicas gives the batch mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.loss_tracker.update_state(loss * replicas if replicas != 1 else loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        loss = self._total_loss(data, training=False)
        self.loss_tracker.update_state(loss * tf.distribute.get_strategy().num_replicas_in_sync)
        return {"loss": self.loss_tracker.result()}

    def fit(self, *args, validation_data=None, callbacks=None, **kwargs):
        """Keras ``fit``; ``validation_data`` may also be a :class:`tfsoft.validation.RankingValidation`,
        which then reports full-ranking ``val_recall@K``/``val_ndcg@K``/... every epoch, before any
        other callback reads the logs (so EarlyStopping/ModelCheckpoint can monitor them)."""
        callbacks = list(callbacks or [])
        if isinstance(validation_data, keras.callbacks.Callback):  # e.g. RankingValidation
            callbacks.insert(0, validation_data)
            validation_data = getattr(validation_data, "loss_data", None)
        return super().fit(*args, validation_data=validation_data, callbacks=callbacks, **kwargs)
