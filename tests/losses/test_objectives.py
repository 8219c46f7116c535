"""The objectives' per-example losses against float64 NumPy references written from their formulas.

Each objective runs through its public ``per_example(query, positive, positive_ids, source)``
with a fake step context (:class:`FakeContext`) whose samplers return fixed, known negative
ids, accidental hits included, so that every expected value can be computed by hand:

* sampled softmax: ``l_0 = s⁺/τ [− log(N·Q(c⁺))]``, ``l_k = s(q, n_k)/τ − log(N·Q(n_k))``,
  negatives equal to the positive masked, ``ℓ = logsumexp(l) − l_0``;
* in-batch softmax: columns = the (gathered) batch positives, then N mixed negatives; with
  logQ each column holding item j is corrected by its expected count in that union,
  ``log(B·p_j + N·Q(j))`` (``log(B·p_j)`` without mixed negatives), duplicates of a row's
  positive masked;
* BPR ``mean_k −log σ(s⁺ − s⁻_k)`` and BCE ``mean(−log σ(s⁺), −log σ(−s⁻_k))`` over the
  negatives that are not the positive.
"""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.losses.objectives import BCE, BPR, FullSoftmax, InBatchSoftmax, SampledSoftmax

from tests.losses import reference as ref

V, D = 12, 3  # item indices 0..11, index 0 = OOV/padding
COUNTS = np.array([0, 9, 7, 6, 5, 4, 4, 3, 2, 2, 1, 1], dtype=np.float64)
P = COUNTS / COUNTS.sum()  # p_j: probability that one training positive is item j
SKEWED = np.r_[0.0, 1.0 / np.arange(1, V) ** 1.5]
SKEWED = SKEWED / SKEWED.sum()  # a non-uniform proposal Q for the sampled objectives
UNIFORM = np.r_[0.0, np.full(V - 1, 1.0 / (V - 1))]
POSITIVE_IDS = np.array([2, 5, 3, 8])
RTOL, ATOL = 1e-5, 1e-6  # log counts are float32 in tfsoft (as NegativeSampler reports them)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


class FixedSampler:
    """A negative sampler that always returns ``ids`` and reports ``log(N·Q(j))`` for a known Q."""

    def __init__(self, ids, probs):
        self.ids = np.asarray(ids, dtype=np.int64)
        self._log_q = tf.constant(_log(probs), tf.float32)

    def sample(self, num, shape=None, seed=None):
        assert int(num) == self.ids.size, f"asked for {int(num)} ids; the test fixed {self.ids.shape}"
        if shape is None:
            assert self.ids.ndim == 1, f"shared draw asked; the test fixed per-example ids {self.ids.shape}"
        else:
            assert tuple(int(s) for s in shape) == self.ids.shape, (shape, self.ids.shape)
        return tf.constant(self.ids)

    def log_expected_count(self, ids, num_draws):
        return tf.gather(self._log_q, tf.cast(ids, tf.int64)) + tf.math.log(tf.cast(num_draws, tf.float32))


class FakeContext:
    """A step context over a fixed catalog. ``before_ids``: positives of the replicas gathered
    before this one (this replica's rows then start at column ``len(before_ids)``)."""

    features = {}
    training = True

    def __init__(self, catalog, samplers=None, before_ids=()):
        self._catalog = tf.constant(catalog)
        self._samplers = samplers or {}
        self._before = np.asarray(before_ids, dtype=np.int64)
        self.num_indices = len(catalog)

    def embed(self, ids):
        return tf.gather(self._catalog, ids)

    def catalog(self):
        return self._catalog

    def valid_items(self):
        return tf.range(self.num_indices) > 0

    def gather(self, tensor):
        if not len(self._before):
            return tensor
        before = self.embed(self._before) if tensor.shape.rank == 2 else tf.constant(self._before, tensor.dtype)
        return tf.concat([before, tensor], axis=0)

    def replica_offset(self):
        return tf.constant(len(self._before), tf.int32)

    def log_item_probability(self, ids):
        return tf.gather(tf.constant(_log(P), tf.float32), tf.cast(ids, tf.int64))

    def sampler(self, key):
        return self._samplers[key]

    def shared_negatives(self, key, num):
        return self.sampler(key).sample(num)

    def per_example_negatives(self, key, batch, num):
        return self.sampler(key).sample(batch * num, shape=tf.stack([batch, num]))


@pytest.fixture
def data(rng):
    """(query [B, d], catalog [V, d]) in float64; positives are catalog rows, as in the model."""
    return rng.normal(size=(len(POSITIVE_IDS), D)), rng.normal(size=(V, D))


def run(objective, query, catalog, context):
    positive_ids = tf.constant(POSITIVE_IDS, tf.int64)
    got = objective.per_example(tf.constant(query), tf.gather(tf.constant(catalog), positive_ids), positive_ids,
                                context)
    assert got.shape == (len(POSITIVE_IDS),)
    return got.numpy()


def test_full_softmax_objective_masks_the_oov_row(data):
    query, catalog = data
    got = run(FullSoftmax(temperature=0.5), query, catalog, FakeContext(catalog))
    expected = ref.full_softmax(query, catalog, POSITIVE_IDS, 0.5, valid=np.arange(V) > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


SHARED_NEGATIVES = np.array([3, 9, 2, 11, 3])  # hits: row 0 (item 2) at k=2, row 2 (item 3) at k=0 and 4
PER_EXAMPLE_NEGATIVES = np.array([[2, 1, 6, 2, 10],   # item 2 twice: two hits
                                  [4, 4, 9, 1, 7],    # none
                                  [3, 3, 3, 3, 3],    # every negative is the positive
                                  [8, 11, 1, 5, 6]])  # one hit


@pytest.mark.parametrize("log_q, correct_positive", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("shared", [True, False])
def test_sampled_softmax_objective_values(data, shared, log_q, correct_positive):
    query, catalog = data
    negative_ids = SHARED_NEGATIVES if shared else PER_EXAMPLE_NEGATIVES
    n, tau = negative_ids.shape[-1], 0.5
    objective = SampledSoftmax(num_negatives=n, shared_negatives=shared, temperature=tau, log_q=log_q,
                               correct_positive=correct_positive)
    got = run(objective, query, catalog, FakeContext(catalog, {"negatives": FixedSampler(negative_ids, SKEWED)}))

    expected = []
    for b, q in enumerate(query):
        positive_id = POSITIVE_IDS[b]
        ids = negative_ids if shared else negative_ids[b]
        positive_logit = catalog[positive_id] @ q / tau - (np.log(n * SKEWED[positive_id]) if correct_positive else 0)
        logits = [positive_logit] + [catalog[j] @ q / tau - (np.log(n * SKEWED[j]) if log_q else 0)
                                     for j in ids if j != positive_id]  # accidental hits removed
        expected.append(ref.logsumexp(np.array(logits)) - positive_logit)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # and the same through the shared reference
    negatives = catalog[negative_ids]
    counts = np.log(n * SKEWED[negative_ids]) if log_q else None
    positive_counts = np.log(n * SKEWED[POSITIVE_IDS]) if correct_positive else None
    np.testing.assert_allclose(got, ref.sampled_softmax(query, catalog[POSITIVE_IDS], POSITIVE_IDS, negatives,
                                                        negative_ids, tau, positive_counts, counts),
                               rtol=RTOL, atol=ATOL)


MIXED_NEGATIVES = np.array([2, 9, 5])  # items 2 and 5 are also batch positives: masked for their rows


def in_batch_reference(query, catalog, all_ids, offset, extra_ids, tau, log_q):
    """−log softmax over the gathered positives then the mixed negatives, from the formula."""
    ids = np.concatenate([all_ids, extra_ids]).astype(np.int64)
    batch, n = len(all_ids), len(extra_ids)
    log_count = None
    if log_q:
        # expected count of item j among B positives drawn from p and N draws from Q (uniform)
        log_count = np.log(batch * P[ids] + n * UNIFORM[ids])
    positive_index = offset + np.arange(len(query))
    return ref.in_batch_softmax(query, catalog[ids], ids, positive_index, tau, log_count, remove_duplicates=True)


@pytest.mark.parametrize("before_ids", [(), (5, 1, 3)], ids=["one_replica", "second_of_two_replicas"])
@pytest.mark.parametrize("log_q", [True, False])
@pytest.mark.parametrize("num_mixed", [0, 3])
def test_in_batch_objective_values(data, num_mixed, log_q, before_ids):
    query, catalog = data
    extra_ids = MIXED_NEGATIVES[:num_mixed]
    samplers = {"mixed": FixedSampler(extra_ids, UNIFORM)} if num_mixed else {}
    objective = InBatchSoftmax(temperature=0.5, log_q=log_q, num_uniform_negatives=num_mixed)
    got = run(objective, query, catalog, FakeContext(catalog, samplers, before_ids))
    all_ids = np.concatenate([np.asarray(before_ids, dtype=np.int64), POSITIVE_IDS])
    expected = in_batch_reference(query, catalog, all_ids, len(before_ids), extra_ids, 0.5, log_q)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_mixed_negative_expected_count_is_the_log_of_the_summed_counts(data):
    # InBatchSoftmax(num_uniform_negatives=N, log_q=True): every column holding item j gets
    # l = s/τ − log(B·p_j + N·Q(j)), B·p_j from the batch positives and N·Q(j) from the draws.
    query, catalog = data
    n, tau, batch = 3, 0.5, len(POSITIVE_IDS)
    objective = InBatchSoftmax(temperature=tau, log_q=True, num_uniform_negatives=n)
    got = run(objective, query, catalog, FakeContext(catalog, {"mixed": FixedSampler(MIXED_NEGATIVES, UNIFORM)}))
    columns = np.concatenate([POSITIVE_IDS, MIXED_NEGATIVES])  # [2, 5, 3, 8 | 2, 9, 5]
    expected = []
    for b, q in enumerate(query):
        logits = np.array([catalog[j] @ q / tau - np.log(batch * P[j] + n / (V - 1)) for j in columns])
        keep = (columns != POSITIVE_IDS[b]) | (np.arange(len(columns)) == b)  # duplicates of the positive masked
        expected.append(ref.logsumexp(logits[keep]) - logits[b])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("objective, negative_ids", [
    (BPR(num_negatives=1), np.array([[7], [5], [3], [1]])),  # rows 1 and 2: the negative is the positive
    (BPR(num_negatives=3), PER_EXAMPLE_NEGATIVES[:, :3]),
    (BCE(num_negatives=5), PER_EXAMPLE_NEGATIVES),
    (BCE(num_negatives=1), np.array([[7], [5], [3], [1]])),
], ids=["bpr_1", "bpr_3", "bce_5", "bce_1"])
def test_pairwise_objective_values(data, objective, negative_ids):
    query, catalog = data
    got = run(objective, query, catalog, FakeContext(catalog, {"negatives": FixedSampler(negative_ids, UNIFORM)}))
    expected = []
    for b, q in enumerate(query):
        positive = catalog[POSITIVE_IDS[b]] @ q
        negatives = [catalog[j] @ q for j in negative_ids[b] if j != POSITIVE_IDS[b]]
        if isinstance(objective, BPR):  # mean_k −log σ(s⁺ − s⁻_k); no valid negative: 0
            expected.append(np.mean([np.logaddexp(0, -(positive - s)) for s in negatives]) if negatives else 0.0)
        else:  # mean over the 1 + N_valid binary instances
            expected.append(np.mean([np.logaddexp(0, -positive)] + [np.logaddexp(0, s) for s in negatives]))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    positive_scores = np.einsum("bd,bd->b", query, catalog[POSITIVE_IDS])
    negative_scores = np.einsum("bd,bnd->bn", query, catalog[negative_ids])
    reference = ref.bpr if isinstance(objective, BPR) else ref.bce
    np.testing.assert_allclose(got, reference(positive_scores, negative_scores, negative_ids != POSITIVE_IDS[:, None]),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("objective_class", [BPR, BCE])
def test_pairwise_objectives_mask_every_training_item_of_the_user(data, objective_class):
    """``mask_seen``: a negative that is any training item of the example's user is masked, not
    only the positive; against the NumPy reference with that mask (and unchanged without it)."""
    from tfsoft.losses.pairwise import interaction_keys

    query, catalog = data
    users = np.array([3, 1, 3, 2])  # examples 0 and 2 share user 3
    seen = {3: {5, 7, 2}, 1: {1, 3}, 2: {4}}
    pairs = np.array([(u, i) for u, items in seen.items() for i in items])

    class SeenContext(FakeContext):
        features = {"user": tf.constant(users), "target": tf.zeros([len(users)], tf.int64)}

        def example_rows(self):
            return tf.range(len(users))

        def seen_keys(self):
            return interaction_keys(tf.constant(pairs[:, 0]), tf.constant(pairs[:, 1]), self.num_indices)

    negative_ids = PER_EXAMPLE_NEGATIVES[:, :3]
    context = SeenContext(catalog, {"negatives": FixedSampler(negative_ids, UNIFORM)})
    got = run(objective_class(num_negatives=3, mask_seen=True), query, catalog, context)
    keep = np.array([[j != POSITIVE_IDS[b] and j not in seen[users[b]] for j in negative_ids[b]]
                     for b in range(len(users))])
    assert not keep.all()  # the example masks something beyond the positive
    positive_scores = np.einsum("bd,bd->b", query, catalog[POSITIVE_IDS])
    negative_scores = np.einsum("bd,bnd->bn", query, catalog[negative_ids])
    reference = ref.bpr if objective_class is BPR else ref.bce
    np.testing.assert_allclose(got, reference(positive_scores, negative_scores, keep), rtol=1e-9, atol=1e-12)
    unmasked = run(objective_class(num_negatives=3), query, catalog, context)
    np.testing.assert_allclose(unmasked, reference(positive_scores, negative_scores,
                                                   negative_ids != POSITIVE_IDS[:, None]), rtol=1e-9, atol=1e-12)
