"""The ``teacher`` soft-target source: frozen finished runs score the student's candidates
(SoftRec SKD/CKD, CSRec's averaged teachers)."""

import json
import shutil

import numpy as np
import pytest

from tfsoft.config import load_config, parse_config
from tfsoft.errors import ConfigError

from tests.conftest import TINY_TRAINING

BASE = list(TINY_TRAINING)


@pytest.fixture
def teacher_run(tiny_run):
    return tiny_run


def _student(teacher_run, *extra):
    return load_config("configs/lastfm_in_batch.yaml",
                       [*BASE, "soft_target=teacher", f"soft_target.teacher_runs=['{teacher_run}']", *extra])


#: the student's loss: its own (in-batch), or full softmax at the teacher's temperature (the
#: teacher's logits over the whole catalog, one row per example)
STUDENT_LOSSES = {"in_batch": [], "full_softmax": ["loss=full_softmax", "loss.temperature=0.1"]}


@pytest.mark.parametrize("loss", list(STUDENT_LOSSES))
def test_a_frozen_copy_of_the_student_as_teacher_with_alpha_one_gives_the_students_entropy(teacher_run, loss):
    """d = p: with the student's own weights, T = 1, α = 1 and no onehot mixing, the loss is
    H(p, p), the entropy of the student's softmax over its candidates (in-batch, or the whole
    catalog)."""
    from tfsoft.backend import tf
    from tfsoft.losses.objectives import SoftmaxObjective
    from tfsoft.training import build_model, create_variables, prepare_data, training_examples

    config = _student(teacher_run, "soft_target.alpha=1.0", "soft_target.onehot_weight=0.0", *STUDENT_LOSSES[loss])
    prepared = prepare_data(config.data)
    model = build_model(config, prepared)
    create_variables(model, config)
    model.load_weights(str(teacher_run / "checkpoints" / "best.weights.h5"))
    examples = training_examples(config, prepared)
    batch = {name: tf.constant(values[:64]) for name, values in examples.items()}
    encoded = model.encode(batch)
    from tfsoft.model import TrainingStepContext

    context = TrainingStepContext(model, batch, encoded, training=False)
    loss = model.retrieval_loss.per_example(encoded.query, encoded.positive, encoded.target, context).numpy()
    assert isinstance(model.retrieval_loss.base, SoftmaxObjective)
    scored = model.retrieval_loss.base.candidate_logits(encoded.query, encoded.positive, encoded.target, context)
    logits = np.where(scored.keep().numpy(), scored.logits.numpy(), -np.inf)
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    p = np.exp(log_p)
    entropy = -np.where(p > 0, p * np.where(np.isfinite(log_p), log_p, 0.0), 0.0).sum(1)
    np.testing.assert_allclose(loss, entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", list(STUDENT_LOSSES))
def test_a_student_trains_with_a_teacher_records_it_and_evaluates_without_it(teacher_run, tmp_path, loss):
    from tfsoft.loaded_run import evaluate_run
    from tfsoft.train_run import train_run

    student = tmp_path / "student"
    metrics = train_run(_student(teacher_run, "soft_target.temperature=2", *STUDENT_LOSSES[loss]), student)
    assert np.isfinite(metrics["test"]["ndcg@10"])
    record = json.loads((student / "teachers.json").read_text())["teachers"]
    assert record[0]["run"] == str(teacher_run.resolve()) and len(record[0]["weights_sha256"]) == 64
    moved = tmp_path / "teacher_gone"
    shutil.copytree(teacher_run, moved)
    shutil.rmtree(teacher_run)
    try:
        again = evaluate_run(student)  # no teacher is needed to evaluate (or export) the student
    finally:
        shutil.copytree(moved, teacher_run)
    assert again["test"]["ndcg@10"] == metrics["test"]["ndcg@10"]


def test_a_teacher_with_other_items_is_an_error_naming_it(teacher_run, tmp_path):
    from tfsoft.train_run import train_run
    from tfsoft.training import build_model, prepare_data

    other = tmp_path / "other"
    train_run(load_config("configs/lastfm_in_batch.yaml", [*BASE, "data.min_item_interactions=40"]), other)
    config = _student(other)
    with pytest.raises(ConfigError, match=f"teacher run '{other}' has an item vocabulary .* differs from the student's"):
        build_model(config, prepare_data(config.data))


def test_teacher_section_validation():
    with pytest.raises(ConfigError, match="teacher_runs"):
        parse_config({"soft_target": {"name": "teacher"}})
    with pytest.raises(ConfigError, match="teacher_weights has 1 values for 2 teacher_runs"):
        parse_config({"soft_target": {"name": "teacher", "teacher_runs": ["a", "b"], "teacher_weights": [1.0]}})
    section = parse_config({"soft_target": {"name": "teacher", "teacher_runs": ["a", "b"]}}).soft_target
    assert (section.temperature, section.onehot_weight, section.checkpoint) == (1.0, 0.5, "best")
