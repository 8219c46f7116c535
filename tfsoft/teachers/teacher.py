"""Teacher runs as soft-target sources: SoftRec's self-distillation (SKD, the same tower) and
cross-distillation (CKD, another tower), CSRec's averaged teachers.

Each teacher is a finished run directory, loaded frozen with :func:`tfsoft.loaded_run.open_run`
and rebuilt so that its query tower emits queries in the student's layout (one per example, or
one per position under ``data.example_mode: user|window``; the weights do not depend on it). At
every step it encodes the student's batch and scores the student's own candidates — never a
dense users × items matrix:

    d = Σ_k w_k · restrict(softmax(t_k / T))        t_k = s_k(q, c) / τ_k

with ``τ_k`` the teacher's own loss temperature (its logits as it was trained), ``T`` the
softening, ``restrict`` the restriction to the candidates with the student's logQ correction
and masks, and ``w`` the ``teacher_weights`` (CSRec averages the teachers' probabilities, not
their logits). The student's checkpoints hold no teacher: evaluation and export need none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfsoft.backend import tf
from tfsoft.errors import ConfigError
from tfsoft.losses.logits import prepare_embeddings
from tfsoft.losses.soft_target_objective import restrict


def teacher_record(run_dir: str | Path, checkpoint: str) -> dict:
    """What a student's run records of a teacher: its path, and digests of its config and weights."""
    from tfsoft.files import file_sha256
    from tfsoft.runs import require_run

    paths = require_run(run_dir, checkpoint)
    return {"run": str(Path(run_dir).resolve()), "checkpoint": checkpoint,
            "config_sha256": file_sha256(paths.config)[0],
            "weights_sha256": file_sha256(paths.checkpoint(checkpoint))[0]}


def load_teacher(run_dir: str | Path, *, student_config, student_prepared, checkpoint: str = "best"):
    """A teacher run's model, frozen, its query tower in the student's example layout.

    Raises:
        RunError: not a run / no such checkpoint (from :func:`tfsoft.loaded_run.open_run`).
        ConfigError: the teacher's item vocabulary differs from the student's, or its query
            tower reads a feature the student's batches do not carry.
    """
    from tfsoft.loaded_run import load_run_model, open_run

    run = open_run(run_dir, checkpoint)
    if tuple(run.items.tokens) != tuple(student_prepared.items.tokens):
        raise ConfigError(f"teacher run '{run_dir}' has an item vocabulary ({run.items.size} items) that differs "
                          f"from the student's ({student_prepared.items.size} items, data.path "
                          f"'{student_config.data.path}'): a teacher must be trained on the same items, in the "
                          f"same order")
    missing = set(run.config.model.query_tower.query_inputs()) - set(student_config.model.query_tower.query_inputs())
    if missing:
        raise ConfigError(f"teacher run '{run_dir}' (query tower '{run.config.model.query_tower.name}') reads "
                          f"{', '.join(sorted(missing))}, which the student's batches (query tower "
                          f"'{student_config.model.query_tower.name}') do not carry")
    layout = run.config.model_copy(deep=True)
    layout.data.example_mode = student_config.data.example_mode
    model = load_run_model(layout, run.prepared, run.paths.checkpoint(checkpoint))
    model.trainable = False
    return model


@dataclass(frozen=True)
class TeacherTarget:
    """Frozen teacher models as a soft-target source (module docstring).

    Attributes:
        teachers: the loaded teacher models (:func:`load_teacher`).
        weights: one non-negative weight per teacher (normalised to sum to 1).
        temperature: T.
        onehot_weight: weight of onehot(y) (SoftRec's SKD/CKD: ½; 0 = the teacher's distribution alone).
    """

    teachers: tuple
    weights: tuple
    temperature: float = 1.0
    onehot_weight: float = 0.5
    #: a teacher's logits are finite and the positive column is never masked: rows sum to 1
    sums_to_one = True

    def target(self, scored, context):
        total = float(sum(self.weights))
        mixture = None
        for teacher, weight in zip(self.teachers, self.weights):
            query = teacher.encode(context.features, training=False).query  # [N, d], the student's rows
            tau = getattr(teacher.retrieval_loss, "temperature", 1.0)
            query = query / tf.cast(tau * self.temperature, query.dtype)  # t/T, scaled on [N, d], not [N, M]
            candidates = prepare_embeddings(teacher.candidate_tower(scored.candidate_ids, training=False),
                                            teacher.similarity)
            if candidates.shape.rank == 2:  # shared columns [M, d]
                logits = tf.matmul(query, candidates, transpose_b=True)
            else:  # per-example columns [N, M, d]
                logits = tf.einsum("nd,nmd->nm", query, candidates)
            part = restrict(tf.cast(logits, scored.logits.dtype), scored, finite=True)
            if len(self.teachers) > 1:
                part = part * (weight / total)
            mixture = part if mixture is None else mixture + part
        return tf.stop_gradient(mixture)
