"""TILModel: a two-tower model whose ``train_step`` is TIL's bilevel step (Wu et al., Eq. 12–15).

One step on a batch of (u, i) with N sampled negatives j per example (draws among u's training
items masked):

1. **Forward at (Θ, Λ)** — p_u, q_i, q_j, η_u (and μ_c for Multi-Interest), the BPR terms
   ℓ_uij = −log σ(p_u·q_i − p_u·q_j), the states s_uij and the weights w_uij = f(s_uij; Λ).
2. **Look-ahead** — ``Θ′ = Θ − η_in ∇_Θ J_in`` with ``J_in = Σ_batch w·ℓ (+ γ·B·L_c)``, Eq. 12's
   sum restricted to the batch (so ``inner_lr`` means what the authors' code's α means), formed
   on the batch's rows only (:mod:`tfsoft.til.lookahead`; the backbone evaluates itself at Θ′
   without copying weights, :mod:`tfsoft.til.backbones`).
3. **OPT_Λ** — on ``∂J_out(Θ′(Λ))/∂Λ``, ``J_out = Σ_batch ℓ(Θ′)`` unweighted. The inner gradient
   is taken on a tape nested in the one that differentiates J_out, so the result is the exact
   ``−η_in·∂²J_in/∂Λ∂Θ · ∇_Θ′ J_out`` (Eq. 14), no finite-difference or first-order shortcut.
4. **OPT_Θ** (the compiled optimizer; for Multi-Interest Γ = [Θ ‖ Φ]) — on the weighted loss
   ``mean_batch(w′·ℓ) + γ·L_c + regularisation`` with w′ = f(s; Λ_{t+1}): Λ steps first, then Θ
   with the updated generator (the paper's alternating optimisation; the authors' code steps
   the same order but computes Θ's gradient before Λ moved). Θ's gradient is that of this loss
   alone: **the outer gradient never reaches Θ** (the authors' code lets ∇J_out leak into
   Θ's update).

**State detachment.** With ``detach_state=True`` (default) s_uij is a constant of Θ
(stop-gradient): Θ's gradient is ``Σ w·∇ℓ`` and the generator cannot be fooled by Θ moving the
embeddings to make weights small, the shortcut the bilevel form exists to remove (§4.4). With
``detach_state=False`` (the authors' code and the literal Eq. 2, s_uij(Θ)) Θ's gradient also
carries ``ℓ·∂w/∂s·∂s/∂Θ``, and so does the look-ahead.

**Multi-Interest.** Until ``pretrain_steps`` the clusters do not exist: no clustering loss and
no α-terms (the state is the Uni-Interest one). At ``pretrain_steps`` K-means on the item
embeddings initialises the centres Φ (end-to-end: trainable, learned through γ·KL(T‖Q),
Eq. 7–9); every ``refresh_every`` steps after that the memberships c_i = argmax Q and the target
T are recomputed (end-to-end), or K-means runs again from the previous centres (``kmeans``,
TIL-MIK; μ_c is then the mean of the cluster's current item embeddings).

**What the weights learn.** The outer loss is measured on the batch the look-ahead stepped on,
so raising every weight lowers it: the raw weights drift up together (to 1 under the sigmoid;
``tests/til/test_til_step.py`` shows the joint optimisation driving them to 0 instead), and a
common scale is invisible to Adam. ``weight_normalisation: batch_mean`` (the authors' code's
``norm`` trick) divides the weights by their batch mean, leaving the generator the relative
weights only. ``weighting: uniform`` fixes every weight to 1 (no Λ, no look-ahead): BPR with the
same seen-masked negatives, the baseline that isolates the weights.

Single device only (a strategy with several replicas is refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from tfsoft import distribute
from tfsoft.backend import keras, tf
from tfsoft.errors import ConfigError
from tfsoft.gradients import prepare_gradients
from tfsoft.losses.logits import prepare_embeddings
from tfsoft.losses.pairwise import seen_negative_mask
from tfsoft.model import TwoTowerModel
from tfsoft.til import clustering
from tfsoft.til.backbones import backbone_of
from tfsoft.til.generator import WeightGenerator, normalise_to_batch_mean
from tfsoft.til.lookahead import displace
from tfsoft.til.objective import TIL
from tfsoft.til.states import interest_matrix, principal_interest, triplet_state

@dataclass(frozen=True)
class Forward:
    """One forward pass of the TIL step (all [B, N] unless said).

    Attributes:
        pair: ℓ_uij, BPR of each (example, negative).
        coefficient: w_b/N_valid on valid negatives, 0 on masked ones (an example's BPR is the
            mean over its valid negatives, scaled by its sample weight w_b, 1 without
            ``features["weight"]``: Σ_b w_b ℓ_b / B, the convention of
            :func:`tfsoft.losses.reduction.weighted_mean`).
        state: [B, N, 2d] s_uij (already stop-gradient when ``detach_state``).
        clustering_loss: scalar L_c (0 before the clusters exist, and for Uni-Interest).
    """

    pair: tf.Tensor
    coefficient: tf.Tensor
    state: tf.Tensor
    clustering_loss: tf.Tensor

class TILState(keras.layers.Layer):
    """What TIL keeps between steps, saved with the weights: the step counter and, for
    Multi-Interest, the centres Φ [K, d], the target T [V, K] and the memberships c [V]."""

    def __init__(self, num_items: int, dim: int, num_clusters: int, multi: bool, trainable_centres: bool, **kwargs):
        super().__init__(**kwargs)
        self.step = self.add_weight(name="step", shape=(), dtype=tf.int64, initializer="zeros", trainable=False)
        if multi:
            self.centres = self.add_weight(name="centres", shape=(num_clusters, dim), initializer="zeros",
                                           trainable=trainable_centres)
            self.target = self.add_weight(name="target", shape=(num_items, num_clusters), initializer="zeros",
                                          trainable=False)
            self.membership = self.add_weight(name="membership", shape=(num_items,), dtype=tf.int32,
                                              initializer="zeros", trainable=False)
        self.built = True

class TILModel(TwoTowerModel):
    """A :class:`tfsoft.model.TwoTowerModel` trained by TIL's bilevel step (module docstring).

    Args:
        query_tower, candidate_tower: an MF (``id``/``id``) or LightGCN backbone.
        loss: the :class:`tfsoft.til.objective.TIL` settings.
        train_users, train_items: [P] the training interactions (S_u^+ for η_u and the mask).
        num_users: user indices, OOV row 0 included.
        **kwargs: :class:`tfsoft.model.TwoTowerModel`'s (num_items, similarity, seed, ...).
    """

    def __init__(self, query_tower, candidate_tower, loss: TIL, *, train_users, train_items, num_users: int,
                 **kwargs):
        if not isinstance(loss, TIL):
            raise ConfigError(f"TILModel trains the til objective; got {type(loss).__name__}")
        super().__init__(query_tower, candidate_tower, loss, seen_pairs=(train_users, train_items), **kwargs)
        if distribute.num_replicas() > 1 or tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ConfigError("til's bilevel step runs on one device; use distribute.strategy: default")
        self.til = loss
        self.backbone = backbone_of(query_tower, candidate_tower)
        dim = int(self.backbone.item_table.shape[-1])
        self._interest = interest_matrix(train_users, train_items, int(num_users), self.num_items)
        self.generator = WeightGenerator(2 * dim, loss.hidden_units, loss.weight_activation, name="til_generator")
        self.til_state = TILState(self.num_items, dim, loss.num_clusters, loss.multi,
                                  trainable_centres=loss.clustering == "end_to_end", name="til_state")
        optimizer = {"adam": keras.optimizers.legacy.Adam, "sgd": keras.optimizers.legacy.SGD}[loss.generator_optimizer]
        self.generator_optimizer = optimizer(learning_rate=loss.generator_learning_rate)
        self.outer_tracker = keras.metrics.Mean(name="outer_loss")
        self.weight_tracker = keras.metrics.Mean(name="weight")

    @property
    def metrics(self):
        return [self.loss_tracker, self.outer_tracker, self.weight_tracker]

    # ------------------------------------------------------------------ the maths' inputs
    def theta_variables(self) -> list:
        """Θ (Γ = [Θ ‖ Φ] for end-to-end Multi-Interest): every trainable variable but Λ's."""
        generator = {id(v) for v in self.generator.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in generator]

    def sample_negatives(self, users) -> tf.Tensor:
        """[B, N] negatives from the objective's proposal (the step's seeded stream)."""
        batch = tf.shape(users)[0]
        return distribute.draw_local(self.samplers["negatives"], batch * self.til.num_negatives, self._train_counter,
                                     seed=0 if self.seed is None else self.seed,
                                     shape=tf.stack([batch, self.til.num_negatives]))

    def _items(self, ids, training):
        return prepare_embeddings(self.candidate_tower(ids, training=training), self.similarity)

    def _centre_table(self, catalog):
        state = self.til_state
        if self.til.clustering == "end_to_end":
            return state.centres
        return clustering.cluster_means(catalog, state.membership, self.til.num_clusters)

    def forward(self, features, negatives, training: bool = True) -> Forward:
        """Towers, BPR terms, states and the clustering loss at the current (Θ, Λ)."""
        users = tf.cast(features["user"], tf.int64)
        positives = tf.cast(features["target"], tf.int64)
        if positives.shape.rank != 1:
            raise ConfigError(f"til trains on one positive per example (data.example_mode: position); got targets "
                              f"of shape {positives.shape}")
        negatives = tf.cast(negatives, tf.int64)
        keep = tf.cast(seen_negative_mask(users, negatives, self._seen_keys, self.num_items), self.generator.dtype)
        coefficient = tf.math.divide_no_nan(keep, tf.reduce_sum(keep, axis=1, keepdims=True))
        if features.get("weight") is not None:  # example weights scale their BPR terms, as in every loss
            coefficient *= tf.cast(tf.reshape(features["weight"], [-1, 1]), coefficient.dtype)
        user = prepare_embeddings(self.query_tower(features, training=training), self.similarity)
        catalog = self._items(tf.range(self.num_items, dtype=tf.int64), training)   # [V, d], one tower call
        positive, negative = tf.gather(catalog, positives), tf.gather(catalog, negatives)
        interest = principal_interest(tf.stop_gradient(catalog) if self.til.detach_state else catalog,
                                      self._interest, users)
        pair = -tf.math.log_sigmoid(tf.reduce_sum(user * positive, -1)[:, tf.newaxis]
                                    - tf.einsum("bd,bnd->bn", user, negative))
        loss = tf.zeros([], user.dtype)
        if self.til.multi:
            state = self.til_state
            active = tf.cast(state.step >= self.til.pretrain_steps, user.dtype)
            centres = self._centre_table(catalog)
            positive_centre = tf.gather(centres, tf.gather(state.membership, positives))
            negative_centres = tf.gather(centres, tf.gather(state.membership, negatives))
            states = triplet_state(user, interest, positive, negative, positive_centre, negative_centres,
                                   alpha=self.til.alpha * active)
            if self.til.clustering == "end_to_end":
                assignment = clustering.student_t_assignment(catalog, state.centres)
                loss = active * clustering.clustering_loss(state.target, assignment, self._valid_items())
        else:
            states = triplet_state(user, interest, positive, negative)
        if self.til.detach_state:
            states = tf.stop_gradient(states)
        return Forward(pair, coefficient, states, loss)

    def weights_of(self, state, coefficient):
        """The weights the loss uses: f(s; Λ), divided by their batch mean with
        ``weight_normalisation: batch_mean``."""
        weights = self.generator(state)
        if self.til.weight_normalisation == "batch_mean":
            weights = normalise_to_batch_mean(weights, coefficient)
        return weights

    def _valid_items(self):
        return tf.range(self.num_items) > 0

    def _regularisation(self):
        return tf.add_n(self.losses) if self.losses else None

    def triplet_weights(self, features, negatives=None) -> tuple[tf.Tensor, tf.Tensor]:
        """(w [B, N], valid [B, N] bool): the generator's weights of a batch's triplets (analysis,
        plots); negatives are drawn when not given."""
        negatives = self.sample_negatives(tf.cast(features["user"], tf.int64)) if negatives is None else negatives
        forward = self.forward(features, negatives, training=False)
        return self.weights_of(forward.state, forward.coefficient), forward.coefficient > 0

    # ------------------------------------------------------------------ clusters
    def refresh_clusters(self):
        """Multi-Interest: K-means initialisation at ``pretrain_steps``; memberships and T
        (end-to-end) or K-means (``kmeans``) every ``refresh_every`` steps after it."""
        til, state = self.til, self.til_state
        step = state.step
        start = tf.equal(step, til.pretrain_steps)
        due = tf.logical_and(step >= til.pretrain_steps,
                             tf.equal(tf.math.floormod(step - til.pretrain_steps, til.refresh_every), 0))

        def catalog():
            return tf.stop_gradient(self._items(tf.range(self.num_items, dtype=tf.int64), False))

        def kmeans_from(points, centres):
            centres, membership = clustering.kmeans(points, centres, til.kmeans_iterations)
            return centres, tf.concat([tf.zeros([1], tf.int32), membership], axis=0)  # row 0: OOV, cluster 0

        def refresh():
            items = catalog()
            points = items[1:]
            if til.clustering == "kmeans":
                seeded = clustering.initial_centres(points, til.num_clusters, self.seed or 0)
                centres, membership = kmeans_from(points, tf.where(start, seeded, tf.convert_to_tensor(state.centres)))
                return tf.group(state.centres.assign(centres), state.membership.assign(membership))

            def initialise():
                centres, _ = kmeans_from(points, clustering.initial_centres(points, til.num_clusters, self.seed or 0))
                with tf.control_dependencies([state.centres.assign(centres)]):
                    return tf.identity(centres)

            centres = tf.cond(start, initialise, lambda: tf.convert_to_tensor(state.centres))
            assignment = clustering.student_t_assignment(items, centres)
            return tf.group(state.target.assign(clustering.sharpened_target(assignment, self._valid_items())),
                            state.membership.assign(clustering.hard_assignment(assignment)))

        def run():
            with tf.control_dependencies([refresh()]):
                return tf.constant(True)

        if til.multi:
            tf.cond(due, run, lambda: tf.constant(False))

    # ------------------------------------------------------------------ the step
    def bilevel_gradients(self, features, negatives):
        """Steps 1–3 of the module docstring without applying anything.

        Returns:
            (hypergradient: list over Λ's variables of ∂J_out(Θ′(Λ))/∂Λ, inner: the persistent
            tape of the forward at Θ, forward: :class:`Forward`, outer_loss: J_out / B,
            regularisation: the towers' regularisation recorded on ``inner``, or None).
        """
        users = tf.cast(features["user"], tf.int64)
        positives = tf.cast(features["target"], tf.int64)
        tables = [self.backbone.user_table, self.backbone.item_table]
        generator = self.generator.trainable_variables
        with tf.GradientTape() as outer:
            with tf.GradientTape(persistent=True) as inner:
                forward = self.forward(features, negatives, training=True)
                weights = self.weights_of(forward.state, forward.coefficient)
                batch = tf.cast(tf.shape(users)[0], weights.dtype)
                inner_loss = tf.reduce_sum(forward.coefficient * weights * forward.pair) \
                    + self.til.gamma * batch * forward.clustering_loss
                regularisation = self._regularisation()
            user_gradient, item_gradient = inner.gradient(inner_loss, tables)
            item_ids = tf.concat([positives[:, tf.newaxis], tf.cast(negatives, tf.int64)], axis=1)
            user_step = displace(users, user_gradient, self.til.inner_lr, self.backbone.user_table.shape[0])
            item_step = displace(item_ids, item_gradient, self.til.inner_lr, self.num_items)
            user, items = self.backbone.displaced(user_step, item_step)
            user = prepare_embeddings(user, self.similarity)
            items = tf.reshape(prepare_embeddings(items, self.similarity), tf.concat([tf.shape(item_ids), [-1]], 0))
            scores = tf.einsum("bd,bnd->bn", user, items)
            outer_pair = -tf.math.log_sigmoid(scores[:, :1] - scores[:, 1:])
            outer_loss = tf.reduce_sum(forward.coefficient * outer_pair)
        hypergradient = outer.gradient(outer_loss, generator)
        return hypergradient, inner, forward, outer_loss / batch, regularisation

    def theta_gradients(self, inner, forward: Forward, regularisation=None):
        """∇_Γ of ``mean(w′·ℓ) + γ·L_c + regularisation`` with w′ from the current generator,
        through the tape of the forward (one backward pass; step 4 of the module docstring)."""
        state = tf.stop_gradient(forward.state)
        batch = tf.cast(tf.shape(forward.pair)[0], forward.pair.dtype)
        with tf.GradientTape() as tape:
            tape.watch(state)
            weights = self.weights_of(state, forward.coefficient)
            weighted = tf.reduce_sum(forward.coefficient * weights * tf.stop_gradient(forward.pair)) / batch
        targets = [forward.pair, forward.clustering_loss]
        seeds = [tf.stop_gradient(forward.coefficient * weights) / batch,
                 tf.constant(self.til.gamma, forward.pair.dtype)]
        if not self.til.detach_state:
            targets.append(forward.state)
            seeds.append(tape.gradient(weighted, state))
        if regularisation is not None:
            targets.append(regularisation)
            seeds.append(tf.ones_like(regularisation))
        variables = self.theta_variables()
        gradients = inner.gradient(targets, variables, output_gradients=seeds,
                                   unconnected_gradients=tf.UnconnectedGradients.NONE)
        loss = weighted + self.til.gamma * forward.clustering_loss
        if regularisation is not None:
            loss += regularisation
        return gradients, variables, loss, weights

    def uniform_step(self, data, negatives):
        """``weighting: uniform``: BPR with the seen-masked negatives, every weight 1 (no Λ)."""
        with tf.GradientTape() as tape:
            forward = self.forward(data, negatives)
            batch = tf.cast(tf.shape(forward.pair)[0], forward.pair.dtype)
            loss = tf.reduce_sum(forward.coefficient * forward.pair) / batch
            regularisation = self._regularisation()
            if regularisation is not None:
                loss += regularisation
        self.apply_gradients(tape, loss, self.theta_variables())
        self.til_state.step.assign_add(1)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def train_step(self, data):
        negatives = self.sample_negatives(tf.cast(data["user"], tf.int64))
        if self.til.weighting == "uniform":
            return self.uniform_step(data, negatives)
        self.refresh_clusters()
        hypergradient, inner, forward, outer_loss, regularisation = self.bilevel_gradients(data, negatives)
        self.generator_optimizer.apply_gradients(zip(hypergradient, self.generator.trainable_variables))
        gradients, variables, loss, weights = self.theta_gradients(inner, forward, regularisation)
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        prepared = prepare_gradients([g for g, _ in pairs], [v for _, v in pairs], self.optimizer, self.dense_gradients)
        self.optimizer.apply_gradients(zip(prepared, [v for _, v in pairs]))
        self.til_state.step.assign_add(1)
        self.outer_tracker.update_state(outer_loss)
        self.weight_tracker.update_state(tf.boolean_mask(weights, forward.coefficient > 0))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "outer_loss": self.outer_tracker.result(),
                "weight": self.weight_tracker.result()}

    def test_step(self, data):
        """Unweighted BPR with the same masked negatives (J_out at Θ)."""
        forward = self.forward(data, self.sample_negatives(tf.cast(data["user"], tf.int64)), training=False)
        batch = tf.cast(tf.shape(forward.pair)[0], forward.pair.dtype)
        loss = tf.reduce_sum(forward.coefficient * forward.pair) / batch
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}
