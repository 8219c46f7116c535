"""The two-tower Keras model: ``train_step``/``test_step`` wire towers to a retrieval loss.

``model.compile(optimizer=...)`` and ``model.fit(dataset, validation_data=..., callbacks=[...])``
work unchanged (Keras' ``Model.train_step`` contract: loss under a ``GradientTape``, gradients
applied by the compiled optimizer, metrics updated, a dict returned), so ModelCheckpoint,
EarlyStopping, TensorBoard and ``tf.distribute`` strategies work as for any Keras model.

Batches are dicts of features. The query tower reads what it needs (``user``, ``history``,
...); ``target`` holds the positive item index ([B], or [B, L] for sequence towers that emit a
query per position, 0 = padding); ``weight`` (optional) is the per-example sample weight.

The step, in parts a subclass can reuse (e.g. a bilevel step with two optimizers):

1. :meth:`TwoTowerModel.encode` — towers on the batch, per-position queries flattened to the
   N non-padding positions: prepared ``query`` [N, d], ``positive`` [N, d], ``target`` [N],
   ``weight`` [N] (:func:`example_rows` maps them back to batch rows). Writes no state.
2. :meth:`TwoTowerModel.compute_loss_value` — the objective's per-example loss through a
   :class:`TrainingStepContext` (candidate embeddings, the catalog, negatives shared across
   replicas, item frequencies, the batch's features), then ``Σ w_i ℓ_i / N_global`` plus
   regularisation.
3. :meth:`TwoTowerModel.apply_gradients` — gradients of a loss on a tape, applied to a set of
   variables by an optimizer (embedding-table gradients by :mod:`tfsoft.gradients`).
4. :meth:`TwoTowerModel.update_state` — state that follows a step (the streaming frequency
   estimator), once per step, after the loss.

Example:
    >>> from tfsoft import losses, towers
    >>> items = towers.IdTower(num_indices=100, dim=8)
    >>> query = towers.HistoryPoolingTower(num_items=100, dim=8, item_embedding=items.embedding)
    >>> model = TwoTowerModel(query, items, losses.InBatchSoftmax(temperature=0.1), num_items=100)
    >>> model.compile(optimizer="adam")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfsoft import distribute
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.gradients import check_dense_policy, prepare_gradients
from tfsoft.losses.logits import check_similarity, prepare_embeddings
from tfsoft.losses.objectives import RetrievalLoss
from tfsoft.losses.pairwise import interaction_keys
from tfsoft.losses.reduction import weighted_mean
from tfsoft.sampling import NegativeSampler, StreamingFrequencyEstimator, make_proposal


@dataclass(frozen=True)
class Encoded:
    """One step's examples after the towers (:meth:`TwoTowerModel.encode`).

    Attributes:
        query: [N, d] query embeddings, prepared for the training similarity.
        positive: [N, d] the positives' candidate embeddings, prepared likewise.
        target: [N] int64 positive item indices.
        weight: [N] sample weights, or None.
    """

    query: tf.Tensor
    positive: tf.Tensor
    target: tf.Tensor
    weight: tf.Tensor | None


def example_rows(target) -> tf.Tensor:
    """[N] int32: the batch row of each example :meth:`TwoTowerModel.encode` keeps — ``range(B)``
    for targets [B]; for per-position targets [B, L] the row of each non-padding position."""
    target = tf.convert_to_tensor(target)
    rows = tf.range(tf.shape(target)[0])
    if target.shape.rank != 2:
        return rows
    keep = tf.reshape(tf.not_equal(target, 0), [-1])
    return tf.boolean_mask(tf.repeat(rows, tf.shape(target)[1]), keep)


class TrainingStepContext:
    """The :class:`tfsoft.losses.objectives.StepContext` of one step: what an objective may ask
    of the model (candidate embeddings, the catalog, negatives, item frequencies, the batch's
    features, replicas) without reaching into towers."""

    def __init__(self, model: "TwoTowerModel", features: dict, encoded: Encoded, training: bool):
        self._model, self._training, self._encoded = model, training, encoded
        self.features = features
        self.num_indices = model.num_items
        self.training = training

    def embed(self, ids):
        return prepare_embeddings(self._model.candidate_tower(ids, training=self._training), self._model.similarity)

    def catalog(self):
        return self.embed(tf.range(self._model.num_items, dtype=tf.int64))

    def valid_items(self):
        return tf.range(self._model.num_items) > 0

    def example_rows(self):
        return example_rows(self.features["target"])

    def gather(self, tensor):
        return distribute.all_gather(tensor)

    def replica_offset(self):
        return distribute.replica_offset(tf.shape(self._encoded.target)[0])

    def log_item_probability(self, ids):
        estimator = self._model.frequency_estimator
        if estimator is not None:
            # p_j per example of a batch of |ids| positives: log p = −log δ_j − log |ids|.
            return estimator.log_probability(ids, tf.shape(ids)[0])
        return tf.gather(self._model._log_item_probability, tf.cast(ids, tf.int64))

    def seen_keys(self):
        return self._model._seen_keys

    def item_count(self, ids):
        counts = self._model._item_counts
        if counts is None:
            raise ConfigError("this objective needs the training item counts, and the model was built without them")
        return tf.gather(counts, tf.cast(ids, tf.int64))

    def sampler(self, key):
        return self._model.samplers[key]

    def shared_negatives(self, key, num):
        """[num] ids drawn for the whole (global) batch: each replica draws its share with its own
        seed and the shares are gathered, so every replica scores the same global set
        (:func:`tfsoft.distribute.draw_shared`; on one replica the sampler's own stream)."""
        return distribute.draw_shared(self.sampler(key), num, self._step(), seed=self._seed())

    def per_example_negatives(self, key, batch, num):
        """[batch, num] ids drawn for this replica's examples (different on every replica)."""
        return distribute.draw_local(self.sampler(key), batch * num, self._step(), seed=self._seed(),
                                     shape=tf.stack([batch, num]))

    def _seed(self):
        return 0 if self._model.seed is None else self._model.seed

    def _step(self):
        return self._model._train_counter if self._training else self._model._test_counter


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
        seen_pairs: (users, items) index arrays of the training interactions, for objectives
            that mask a user's seen items as negatives (``bpr``/``bce`` ``mask_seen``); None = none.
    """

    def __init__(self, query_tower, candidate_tower, loss: RetrievalLoss, *, num_items: int,
                 item_counts=None, similarity: str = "cosine", score_similarity: str | None = None,
                 seed: int | None = None, dense_gradients: str = "auto", seen_pairs=None, **kwargs):
        super().__init__(**kwargs)
        check_dense_policy(dense_gradients)
        self.dense_gradients = dense_gradients
        check_similarity(similarity)
        score_similarity = check_similarity(score_similarity or similarity, "score_similarity")
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
        self._item_counts = None if item_counts is None else tf.constant(item_counts, dtype=tf.float32)
        # the training (user, item) pairs as sorted keys, for objectives that mask a user's seen items
        self._seen_keys = None if seen_pairs is None else interaction_keys(
            tf.constant(np.asarray(seen_pairs[0], np.int64)), tf.constant(np.asarray(seen_pairs[1], np.int64)),
            self.num_items)
        self.seed = seed
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

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None, **kwargs):
        """Keras ``compile``; the objective is the model's ``loss`` argument, and retrieval
        quality is reported by :class:`tfsoft.validation.RankingValidation`, so ``loss``,
        ``metrics`` and ``weighted_metrics`` are refused rather than silently ignored."""
        if loss is not None:
            raise ConfigError(f"TwoTowerModel trains with the objective given to TwoTowerModel(..., loss); "
                              f"compile(loss=...) would be ignored; got {loss!r}")
        if metrics or weighted_metrics:
            raise ConfigError(f"TwoTowerModel reports retrieval metrics through tfsoft.validation.RankingValidation "
                              f"(val_recall@K, val_ndcg@K, ... in the epoch logs); compile(metrics=...) would be "
                              f"ignored; got {metrics or weighted_metrics!r}")
        super().compile(optimizer=optimizer, **kwargs)

    # ------------------------------------------------------------------ training
    def encode(self, features, training: bool = False) -> Encoded:
        """Towers on a batch: prepared query and positive embeddings, one row per example.

        A query tower with a query per position ([B, L, d], targets [B, L]) is flattened to
        the N non-padding positions. Pure: writes no state.
        """
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
        return Encoded(prepare_embeddings(query, self.similarity), positive, target, weight)

    def compute_loss_value(self, features, training: bool):
        """(this replica's share of the global mean loss + regularisation, the encoded batch).

        ``Σ_i w_i ℓ_i / N_global`` where N_global counts the examples of every replica, so the
        replicas' gradients sum to the gradient of the global mean (:mod:`tfsoft.distribute`).
        """
        encoded = self.encode(features, training=training)
        context = TrainingStepContext(self, features, encoded, training)
        per_example = self.retrieval_loss.per_example(encoded.query, encoded.positive, encoded.target, context)
        loss = weighted_mean(per_example, encoded.weight,
                             global_batch_size=distribute.global_count(tf.shape(per_example)[0]))
        if self.losses:
            loss += tf.add_n(self.losses) / distribute.num_replicas()
        return loss, encoded

    def apply_gradients(self, tape, loss, variables=None, optimizer=None):
        """Differentiate ``loss`` on ``tape`` and apply it with ``optimizer`` (default: the
        compiled one) to ``variables`` (default: every trainable variable), embedding-table
        gradients prepared by :func:`tfsoft.gradients.prepare_gradients`. A step with two
        optimizers (e.g. bilevel training) calls it once per optimizer."""
        variables = self.trainable_variables if variables is None else variables
        optimizer = self.optimizer if optimizer is None else optimizer
        gradients = prepare_gradients(tape.gradient(loss, variables), variables, optimizer, self.dense_gradients)
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])

    def update_state(self, encoded: Encoded) -> None:
        """State that follows each training step, once, after the loss: the streaming
        frequency estimator sees the step's (global) positives."""
        if self.frequency_estimator is not None:
            self.frequency_estimator.update(distribute.all_gather(encoded.target))

    def _track(self, loss):
        # Each replica's loss is divided by the global count: × replicas gives the batch mean.
        replicas = distribute.num_replicas()
        self.loss_tracker.update_state(loss * replicas if replicas != 1 else loss)
        return {"loss": self.loss_tracker.result()}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, encoded = self.compute_loss_value(data, training=True)
        self.apply_gradients(tape, loss)
        self.update_state(encoded)
        return self._track(loss)

    def test_step(self, data):
        loss, _ = self.compute_loss_value(data, training=False)
        return self._track(loss)

    def fit(self, *args, validation_data=None, callbacks=None, **kwargs):
        """Keras ``fit``; ``validation_data`` may also be a :class:`tfsoft.validation.RankingValidation`,
        which then reports full-ranking ``val_recall@K``/``val_ndcg@K``/... every epoch, before any
        other callback reads the logs (so EarlyStopping/ModelCheckpoint can monitor them).
        A part of the objective with ``on_epoch_begin(model)`` (the loss, or its soft-target
        ``source``, e.g. ``neighbour``'s θ′ snapshot) is called at every epoch start."""
        parts = (self.retrieval_loss, getattr(self.retrieval_loss, "source", None))
        callbacks = [keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None, part=part:
                                                    part.on_epoch_begin(self))
                     for part in parts if callable(getattr(part, "on_epoch_begin", None))] + list(callbacks or [])
        if isinstance(validation_data, keras.callbacks.Callback):  # e.g. RankingValidation
            callbacks.insert(0, validation_data)
            validation_data = getattr(validation_data, "loss_data", None)
        return super().fit(*args, validation_data=validation_data, callbacks=callbacks, **kwargs)
