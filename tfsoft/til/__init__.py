"""TIL, triplet importance learning (Wu et al., "Adapting Triplet Importance of Implicit Feedback
for Personalized Recommendation"): a learned weight per BPR triplet (u, i, j), trained by
bilevel optimisation inside ``train_step``.

One concept per module, maths as plain TensorFlow functions, state only where there is state:

- :mod:`tfsoft.til.generator` — the weight generator f(s; Λ) (Eq. 3), a Keras layer.
- :mod:`tfsoft.til.states` — η_u and the Uni-/Multi-Interest states (Eq. 4–6).
- :mod:`tfsoft.til.clustering` — Student-t assignment, sharpened target, KL (Eq. 7–9), K-means.
- :mod:`tfsoft.til.lookahead` — the one-step look-ahead Θ′ = Θ − η∇J_in on a batch's rows (Eq. 14–15).
- :mod:`tfsoft.til.backbones` — MF (``id``) and LightGCN evaluated at Θ′ without copying weights.
- :mod:`tfsoft.til.objective` — the ``til`` objective (config values; builds the model).
- :mod:`tfsoft.til.model` — :class:`TILModel`, the bilevel ``train_step`` (Eq. 12–13).
"""
