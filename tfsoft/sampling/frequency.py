"""Streaming estimate of how often each item appears in training batches.

Yi et al., RecSys 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", §4 "Streaming Frequency Estimation", Algorithm 2. In-batch softmax treats
the other positives of a batch as negatives, sampled in proportion to item popularity; the
logQ correction subtracts ``log p(y)`` and needs ``p(y)`` for items of an ever-changing
stream, which this estimator tracks with two hash-bucketed arrays.

Example::

    >>> estimator = StreamingFrequencyEstimator(num_buckets=100_003, learning_rate=0.01)
    >>> estimator.update(positive_ids)                    # once per training step
    >>> log_p = estimator.log_probability(positive_ids, batch_size=64)
    >>> logits -= log_p[tf.newaxis, :]                    # in-batch logQ correction
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ConfigError

HashName = Literal["mod", "multiplicative"]
DuplicateMode = Literal["sequential", "once"]

#: Lehmer (MINSTD) multiplicative hash: ``h(y) = ((y mod P) · M mod P) mod H`` with P = 2^31 − 1.
_HASH_PRIME = 2**31 - 1
_HASH_MULTIPLIER = 48271


def bucket_of(ids: tf.Tensor, num_buckets: int, hashing: HashName = "mod") -> tf.Tensor:
    """Hash bucket ``h(y)`` of each id, int64, same shape as ``ids``.

    "mod": ``h(y) = y mod H`` (ids are already dense ints). "multiplicative":
    ``h(y) = ((y mod P) · 48271 mod P) mod H`` with ``P = 2^31 − 1`` (Lehmer hash; a bijection
    on 1..P−1, so it only scatters consecutive ids across buckets). Products stay below 2^47.
    """
    ids = tf.cast(ids, tf.int64)
    if hashing == "multiplicative":
        ids = tf.math.floormod(tf.math.floormod(ids, _HASH_PRIME) * _HASH_MULTIPLIER, _HASH_PRIME)
    return tf.math.floormod(ids, num_buckets)


class StreamingFrequencyEstimator(tf.Module):
    """Algorithm 2 of Yi et al. (RecSys 2019, §4): streaming estimate of item frequency.

    State: ``A[H]`` (int64, the last step at which a bucket was seen; 0 = never, steps start
    at 1), ``B[H]`` (float32, the estimated number of steps between occurrences, δ) and the
    step counter ``t``. For each training step ``t`` and each item ``y`` of the batch::

        B[h(y)] ← (1 − α) · B[h(y)] + α · (t − A[h(y)])
        A[h(y)] ← t

    ``1 / B[h(y)]`` estimates the expected number of occurrences of ``y`` per step and
    ``p(y) = 1 / (B[h(y)] · batch_size)`` its per-example probability.

    Duplicates within one batch (the same id twice, or two ids hashing to one bucket):
    - ``duplicates="sequential"`` (default) is exactly Algorithm 2 with the batch's items
      processed one after another (in any order): the first occurrence of a bucket sees gap
      ``t − A``, the ``c − 1`` others gap 0, so in closed form
      ``B ← (1 − α)^c · B + α (1 − α)^(c−1) (t − A)``, applied with one ``tf.unique_with_counts``
      and one scatter. ``1/B`` then tracks the expected *count* per step (the occurrence-weighted
      mean gap is 1/E[count]), so ``p(y)`` is the per-example probability even for items that
      appear several times per batch. Caveat of the algorithm itself: the zero gaps come after
      the real one, so for an item seen ``c`` times per step ``B`` is biased low by ≈ α(c − 1)/2
      (≈ 3.5% at α = 0.01, c = 8); keep α·c small.
    - ``duplicates="once"``: a bucket counts once per step (``c = 1``); ``1/B`` is then the
      probability that the item appears *at least once* in a batch, ``1 − (1 − p)^batch``, which
      saturates at 1 for popular items, so ``1/(B · batch_size)`` underestimates their ``p``.

    First occurrence: a bucket never seen before (A = 0) only records ``A ← t`` (its gap since
    the start of training is not a gap between occurrences); ``B`` keeps ``initial_delta``
    (less the decay of its own within-batch duplicates). Unseen buckets therefore report
    ``1 / initial_delta`` occurrences per step: choose it near the gap of a rare item, e.g. the
    number of steps per epoch (default 1000). Index 0 (OOV/padding) is never counted.

    Distribution: create the estimator under ``strategy.scope()``; its variables use
    ``VariableAggregation.ONLY_FIRST_REPLICA``, so calling :meth:`update` in the replica
    function with the **all-gathered** batch ids (identical on every replica) applies the first
    replica's update to every copy. All methods work eagerly and inside ``tf.function``.

    Args:
        num_buckets: H, the number of hash buckets (a prime above the catalog size avoids
            collisions with "mod" hashing).
        learning_rate: α in (0, 1].
        initial_delta: initial B > 0 (steps between occurrences assumed before any is seen).
        hashing: "mod" (``y mod H``) or "multiplicative" (see :func:`bucket_of`).
        duplicates: "sequential" or "once" (see above).
    """

    def __init__(
        self,
        num_buckets: int = 100_003,
        learning_rate: float = 0.01,
        initial_delta: float = 1000.0,
        *,
        hashing: HashName = "mod",
        duplicates: DuplicateMode = "sequential",
        name: str | None = None,
    ):
        super().__init__(name=name)
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)) or num_buckets < 1:
            raise ConfigError(f"num_buckets must be an int >= 1; got {num_buckets!r}")
        if not isinstance(learning_rate, (int, float, np.floating)) or not 0.0 < learning_rate <= 1.0:
            raise ConfigError(f"learning_rate (alpha) must be in (0, 1]; got {learning_rate!r}")
        if (
            not isinstance(initial_delta, (int, float, np.integer, np.floating))
            or not np.isfinite(initial_delta)
            or initial_delta <= 0
        ):
            raise ConfigError(f"initial_delta must be a finite number > 0 (steps); got {initial_delta!r}")
        if hashing not in ("mod", "multiplicative"):
            raise ConfigError(f"hashing must be 'mod' or 'multiplicative'; got {hashing!r}")
        if duplicates not in ("sequential", "once"):
            raise ConfigError(f"duplicates must be 'sequential' or 'once'; got {duplicates!r}")
        self.num_buckets = int(num_buckets)
        self.learning_rate = float(learning_rate)
        self.initial_delta = float(initial_delta)
        self.hashing = hashing
        self.duplicates = duplicates
        variable = dict(
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        self.last_seen = tf.Variable(tf.zeros([self.num_buckets], tf.int64), name="A_last_seen", **variable)
        self.delta = tf.Variable(
            tf.fill([self.num_buckets], tf.constant(self.initial_delta, tf.float32)), name="B_delta", **variable
        )
        self.step = tf.Variable(tf.constant(0, tf.int64), name="step", **variable)

    def buckets(self, ids) -> tf.Tensor:
        """h(ids), int64, same shape as ids."""
        return bucket_of(ids, self.num_buckets, self.hashing)

    def update(self, ids) -> None:
        """Advance the step counter to ``t + 1`` and apply Algorithm 2 to this step's ids.

        Args:
            ids: int tensor of any shape: the batch's positive item ids (all replicas' ids under
                a distribution strategy). Ids equal to 0 (OOV/padding) are skipped.
        """
        t = self.step.read_value() + 1
        ids = tf.reshape(tf.cast(ids, tf.int64), [-1])
        ids = tf.boolean_mask(ids, tf.not_equal(ids, 0))
        buckets, _, counts = tf.unique_with_counts(self.buckets(ids), out_idx=tf.int64)
        if self.duplicates == "once":
            counts = tf.ones_like(counts)
        last = tf.gather(self.last_seen, buckets)
        delta = tf.gather(self.delta, buckets)
        decay = tf.constant(1.0 - self.learning_rate, tf.float32)
        gap = tf.cast(t - last, tf.float32)
        first_update = decay * delta + self.learning_rate * gap
        after_first = tf.where(tf.equal(last, 0), delta, first_update)  # never seen: only A <- t
        new_delta = after_first * tf.pow(decay, tf.cast(counts - 1, tf.float32))
        self.delta.scatter_update(tf.IndexedSlices(new_delta, buckets))
        self.last_seen.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(buckets), t), buckets))
        self.step.assign(t)

    def per_step_probability(self, ids) -> tf.Tensor:
        """``1 / B[h(ids)]``: estimated expected occurrences of each id per training step, float32.

        (With ``duplicates="once"``: the probability that the id appears in a batch.)
        """
        return 1.0 / tf.gather(self.delta, self.buckets(ids))

    def probability(self, ids, batch_size) -> tf.Tensor:
        """``p(y) = 1 / (B[h(y)] · batch_size)``: estimated per-example probability, float32."""
        return tf.exp(self.log_probability(ids, batch_size))

    def log_probability(self, ids, batch_size) -> tf.Tensor:
        """``log p(y) = −log B[h(y)] − log batch_size`` (float32, shape of ids): the in-batch logQ term."""
        log_delta = tf.math.log(tf.gather(self.delta, self.buckets(ids)))
        return -log_delta - tf.math.log(tf.cast(batch_size, tf.float32))
