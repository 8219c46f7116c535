"""The ``neighbour`` soft target: SoftRec's Collaborative Siamese Network (CSN, §3.2.2, Eq. 8–9).

For an example with context c and target y, a context c′ is **sampled** uniformly from the K
contexts most similar to c (cosine of user vectors), and the target is the prediction of a
stop-gradient copy θ′ of the student on c′, softened by T and mixed with the onehot label:

    d_CSN = ½ (p(· | c′; θ′, T) + onehot_y)                                   (Eq. 8)
    loss  = (1 − α)·H(onehot_y, p(· | c; θ)) + α·KL(d_CSN ‖ p(· | c; θ))      (Eq. 9)

Over the student's candidate set C (full catalog, sampled or in-batch), p(· | c′; θ′, T) is
restricted to C with the student's logQ correction and masks (:func:`restrict`), as for
every source.

Choices, and why:

* **Contexts are users.** Training batches carry the user index of every example
  (``features["user"]``, in every ``data.example_mode``), not the index of its training
  sequence, so a context is a user: all its training sequences (under ``data.window`` a user
  has several) concatenated in order. Every example of user u (each prefix in ``position``
  mode, each position in ``user``/``window`` mode) draws its c′ among u's neighbours; c′'s
  prediction is θ′'s query tower on the neighbour's training history (its last
  ``max_history`` items: the context the model would recommend from at the end of training),
  so c′ never reads validation or test items.
* **User vectors are the mean of θ′'s item vectors** over the user's training items (each
  item vector L2-normalised, the mean L2-normalised: cosine similarity). SoftRec averages
  Item2vec vectors; θ′'s item table stands in for them: it is trained on the same data, it
  needs no extra training stage nor hyper-parameters, it sees every training item of the
  user (not only the last ``max_history``), and it improves every epoch. At the first epoch
  θ′ is the initialisation, and the mean of random item vectors is a random projection of the
  user's item-count vector, so even the first neighbours are item-overlap neighbours (while
  p(·|c′; θ′) is then near uniform: the first epoch is close to label smoothing).
* **θ′ is a snapshot of the student's outputs, refreshed at each epoch start**
  (``refresh: epoch``): :meth:`NeighbourTarget.on_epoch_begin`, which
  :meth:`tfsoft.model.TwoTowerModel.fit` calls for any loss part that has it, stores θ′'s
  query of every user's context [U, d], θ′'s candidate embeddings [V, d], and the K
  neighbours of every user [U, K] (searched with :func:`tfsoft.topk.exact_top_k`, or ScaNN
  with ``index: scann``, in chunks of users, self excluded). That is exactly what a frozen
  copy of the weights would compute on any c′ (a context is a training user with a fixed
  history), without a second model: a step costs a gather and an [N, M] product, the cost of
  the student's own logits, and no tower runs. Never a dense users × items matrix; the
  exact search holds one [chunk, U] score block at a time.
* Scores are θ′'s training logits: the training similarity, divided by the base loss's
  temperature τ, then by T (as :mod:`tfsoft.teachers.teacher` does).

The tables are plain non-trainable variables of the source, not of the model: checkpoints
do not hold them, and evaluation and export (built without the soft-target term) need none.
A user with no other user to draw (no training history, or alone) gets a zero query: a
uniform p over C, so its target is ½(uniform + onehot).
"""

from __future__ import annotations

import numpy as np

from tfsoft.backend import tf
from tfsoft.data.ragged import Ragged
from tfsoft.data.sequences import query_features
from tfsoft.errors import ConfigError
from tfsoft.losses.logits import prepare_embeddings
from tfsoft.losses.soft_target_objective import restrict
from tfsoft.topk import exact_top_k

NEIGHBOUR_INDEXES = ("brute_force", "scann")


def user_histories(train: Ragged, train_user: np.ndarray, num_users: int) -> Ragged:
    """[U, *] the training items of every user index (its training sequences concatenated in
    order; empty for a user without training data).

    Example:
        >>> user_histories(Ragged.from_rows([[1, 2], [5], [3]]), np.array([2, 1, 2]), 4).to_list()
        [[], [5], [1, 2, 3], []]
    """
    train_user = np.asarray(train_user, dtype=np.int64)
    owner = train_user[train.row_ids()]  # user of every training interaction
    order = np.argsort(owner, kind="stable")  # grouped by user, time order kept within a user
    return Ragged.from_lengths(train.values[order], np.bincount(owner, minlength=num_users)[:num_users])


def mean_item_vectors(histories: Ragged, item_vectors) -> tf.Tensor:
    """[U, d] L2-normalised mean of the L2-normalised item vectors of every user's items
    (zero rows for users without items). ``item_vectors``: [V, d]."""
    items = tf.math.l2_normalize(tf.convert_to_tensor(item_vectors, tf.float32), axis=-1)
    vectors = tf.math.unsorted_segment_mean(tf.gather(items, histories.values.astype(np.int64)),
                                            histories.row_ids(), num_segments=len(histories))
    return tf.math.l2_normalize(vectors, axis=-1)


def nearest_users(user_vectors, active: np.ndarray, k: int, index: str = "brute_force",
                  chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar active users of every user (inner product of ``user_vectors``,
    cosine when they are normalised), self excluded.

    Args:
        user_vectors: [U, d].
        active: [U] bool, users that may be searched and found (those with training items).
        k: neighbours per user (K).
        index: ``brute_force`` (:func:`tfsoft.topk.exact_top_k`, exact) or ``scann``
            (:class:`tfsoft.export.index.ScannIndex`, approximate, for many users).
        chunk: users searched at once (default: a [chunk, U] score block of ~16 M floats).

    Returns:
        ``(table, count)``: [U, max(1, min(k, A − 1))] int32 user indices, best first (0 in
        empty slots), and [U] int32 the number of neighbours found (0 for inactive users),
        with A the number of active users.
    """
    if index not in NEIGHBOUR_INDEXES:
        raise ConfigError(f"soft_target.index must be one of {', '.join(NEIGHBOUR_INDEXES)}; got {index!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"soft_target.num_neighbours must be an integer >= 1; got {k!r}")
    vectors = np.asarray(user_vectors, dtype=np.float32)
    active = np.flatnonzero(np.asarray(active, dtype=bool))
    width = max(min(int(k), len(active) - 1), 0)
    table = np.zeros((len(vectors), max(width, 1)), dtype=np.int32)  # >= 1 column: a step gathers slot 0
    count = np.zeros(len(vectors), dtype=np.int32)
    if width == 0:
        return table, count
    # Search space: row 0 = "no user" (the convention of tfsoft.topk), row r + 1 = active user r.
    candidates = np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors[active]])
    if index == "scann":
        from tfsoft.export.index import ScannIndex

        search = ScannIndex(candidates, width + 1).search
    else:
        constant = tf.constant(candidates)
        search = lambda queries, n, exclude: exact_top_k(queries, constant, n, exclude)  # noqa: E731
    chunk = chunk or max(1, min(4096, (1 << 24) // len(candidates)))
    for start in range(0, len(active), chunk):
        rows = np.arange(start, min(start + chunk, len(active)))
        found, _ = search(tf.constant(vectors[active[rows]]), width, tf.constant((rows + 1)[:, None], tf.int64))
        found = found.numpy()
        slots = np.zeros((len(rows), table.shape[1]), np.int64)
        slots[:, :found.shape[1]] = found
        table[active[rows]] = np.where(slots > 0, active[np.maximum(slots, 1) - 1], 0)
        count[active[rows]] = (slots > 0).sum(axis=1)
    return table, count


class NeighbourTarget:
    """SoftRec's CSN target (module docstring): ``d = ½(restrict(softmax(θ′(c′)·θ′(C)/(τT))) + onehot_y)``
    with c′ drawn uniformly from the example's user's K neighbours.

    Args:
        histories: [U, *] every user's training items (:func:`user_histories`).
        max_history: history length of the query tower's features (``data.max_history``).
        num_neighbours: K.
        temperature: T.
        index: neighbour search, ``brute_force`` (exact) or ``scann``.
        seed: op seed of the neighbour draws.
    """

    onehot_weight = 0.5

    def __init__(self, histories: Ragged, *, max_history: int, num_neighbours: int = 10, temperature: float = 1.0,
                 index: str = "brute_force", seed: int | None = None):
        if not isinstance(num_neighbours, (int, np.integer)) or isinstance(num_neighbours, bool) or num_neighbours < 1:
            raise ConfigError(f"soft_target.num_neighbours must be an integer >= 1; got {num_neighbours!r}")
        if not temperature > 0:
            raise ConfigError(f"soft_target.temperature must be > 0; got {temperature!r}")
        if index not in NEIGHBOUR_INDEXES:
            raise ConfigError(f"soft_target.index must be one of {', '.join(NEIGHBOUR_INDEXES)}; got {index!r}")
        self.histories, self.max_history = histories, int(max_history)
        self.num_neighbours, self.temperature = int(num_neighbours), float(temperature)
        self.index, self.seed = index, seed
        self.active = histories.lengths > 0
        self.refreshes = 0
        self._tau = 1.0
        self._queries = self._items = self._table = self._count = None

    @classmethod
    def from_data(cls, prepared, *, max_history: int, **kwargs) -> "NeighbourTarget":
        """The source for a :class:`tfsoft.data.PreparedData` (its training split only)."""
        split = prepared.split
        return cls(user_histories(split.train, split.train_user, prepared.users.num_indices),
                   max_history=max_history, **kwargs)

    # ------------------------------------------------------------ θ′ snapshot
    def on_epoch_begin(self, model) -> None:
        """``refresh: epoch``: called by :meth:`tfsoft.model.TwoTowerModel.fit` at every epoch start."""
        self.refresh(model)

    def refresh(self, model, batch_size: int = 2048) -> None:
        """θ′ := the model now: its users' queries, its candidate embeddings and the K-neighbour table."""
        similarity = model.similarity
        items = model.candidate_tower(tf.range(model.num_items, dtype=tf.int64), training=False)
        users = np.flatnonzero(self.active)
        queries = np.zeros((len(self.histories), items.shape[-1]), np.float32)
        for start in range(0, len(users), batch_size):
            chunk = users[start:start + batch_size]
            history = Ragged.from_rows([self.histories[u] for u in chunk])
            query = model.query_tower(query_features(chunk, history, self.max_history), training=False)
            if query.shape.rank == 3:  # a query per position: the last one has read the whole history
                query = query[:, -1]
            queries[chunk] = prepare_embeddings(query, similarity).numpy()
        table, count = nearest_users(mean_item_vectors(self.histories, items), self.active, self.num_neighbours,
                                     self.index)
        base = getattr(model.retrieval_loss, "base", model.retrieval_loss)
        self._tau = float(getattr(base, "temperature", 1.0))
        values = {"_queries": queries, "_items": prepare_embeddings(items, similarity).numpy(),
                  "_table": table, "_count": count}
        for name, value in values.items():
            if getattr(self, name) is None:
                setattr(self, name, tf.Variable(value, trainable=False, name="neighbour" + name))
            else:
                getattr(self, name).assign(value)
        self.refreshes += 1

    @property
    def table(self) -> np.ndarray:
        """[U, K] the current neighbours of every user (0 in empty slots)."""
        self._check_refreshed()
        return self._table.numpy()

    @property
    def counts(self) -> np.ndarray:
        """[U] the number of neighbours of every user."""
        self._check_refreshed()
        return self._count.numpy()

    def _check_refreshed(self) -> None:
        if self._table is None:
            raise ConfigError("the neighbour soft target has no θ′ snapshot yet: TwoTowerModel.fit refreshes it at "
                              "each epoch start (or call NeighbourTarget.refresh(model))")

    # ------------------------------------------------------------------ a step
    def draw_neighbours(self, users) -> tf.Tensor:
        """[N] a neighbour drawn uniformly among each user's K (user 0, a zero query, if it has none)."""
        self._check_refreshed()
        users = tf.cast(users, tf.int64)
        count = tf.gather(self._count, users)
        u = tf.random.uniform(tf.shape(users), seed=self.seed)
        slot = tf.minimum(tf.cast(u * tf.cast(count, tf.float32), tf.int32), tf.maximum(count - 1, 0))
        return tf.gather(tf.gather(self._table, users), slot, batch_dims=1)

    def neighbour_logits(self, neighbours, candidate_ids) -> tf.Tensor:
        """[N, M] θ′'s softened logits ``s(q′_{c′}, e′_j)/(τ·T)`` of each neighbour over the candidates
        (``candidate_ids`` [M] shared or [N, M] per example)."""
        self._check_refreshed()
        query = tf.gather(self._queries, neighbours)
        candidates = tf.gather(self._items, tf.cast(candidate_ids, tf.int64))
        if candidates.shape.rank == 2:
            scores = tf.matmul(query, candidates, transpose_b=True)
        else:
            scores = tf.einsum("nd,nmd->nm", query, candidates)
        return scores / (self._tau * self.temperature)

    def target(self, scored, context):
        if "user" not in context.features:
            raise ConfigError("the neighbour soft target needs the user index of every example (feature 'user')")
        users = tf.gather(context.features["user"], context.example_rows())
        logits = self.neighbour_logits(self.draw_neighbours(users), scored.candidate_ids)
        return tf.stop_gradient(restrict(tf.cast(logits, scored.logits.dtype), scored))
