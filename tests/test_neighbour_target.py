"""The ``neighbour`` soft-target source (SoftRec CSN, Eq. 8–9) against NumPy references: the
K-nearest-user table, the target over the student's candidates, the per-epoch θ′ refresh, and
one tiny training run that evaluates without any neighbour state."""

import h5py
import numpy as np
import pytest

from tfsoft.config import load_config, parse_config
from tfsoft.data.ragged import Ragged
from tfsoft.errors import ConfigError

BASE = ["train.epochs=1", "train.steps_per_epoch=3", "model.embedding_dim=8", "soft_target=neighbour"]


def _numpy_top_k(vectors, active, k):
    """Brute-force cosine top-k among active users, self excluded: (table, count) with 0 padding."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    users = np.flatnonzero(active)
    width = max(min(k, len(users) - 1), 1)
    table, count = np.zeros((len(vectors), width), np.int64), np.zeros(len(vectors), np.int64)
    for u in users:
        others = users[users != u]
        scores = unit[others] @ unit[u]
        best = others[np.argsort(-scores, kind="stable")[:width]]
        table[u, :len(best)], count[u] = best, len(best)
    return table, count


def _numpy_mean_item_vectors(histories, items):
    items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    out = np.zeros((len(histories), items.shape[1]))
    for u, row in enumerate(histories):
        if len(row):
            mean = items[row].mean(0)
            out[u] = mean / np.linalg.norm(mean)
    return out


def test_user_histories_concatenate_each_users_training_sequences_in_order():
    from tfsoft.teachers.neighbour import user_histories

    histories = user_histories(Ragged.from_rows([[4, 5], [9], [6], []]), np.array([3, 1, 3, 2]), 5)
    assert histories.to_list() == [[], [9], [], [4, 5, 6], []]


@pytest.mark.parametrize("k", [4, 30])
def test_the_neighbour_table_is_the_brute_force_cosine_top_k_without_self(rng, k):
    from tfsoft.teachers.neighbour import nearest_users

    vectors = rng.normal(size=(25, 6)).astype(np.float32)
    active = rng.random(25) > 0.2
    active[0] = False  # user 0 is the OOV user
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    table, count = nearest_users(unit, active, k, chunk=7)  # several chunks
    expected_table, expected_count = _numpy_top_k(vectors, active, k)
    np.testing.assert_array_equal(count, expected_count)
    np.testing.assert_array_equal(table, expected_table)
    assert not np.any((table == np.arange(25)[:, None]) & (table > 0))  # never oneself
    assert set(table[active].ravel()) <= set(np.flatnonzero(active))
    scann_table, scann_count = nearest_users(unit, active, k, index="scann")
    np.testing.assert_array_equal(scann_count, expected_count)
    overlap = [len(set(a[:c]) & set(b[:c])) / c for a, b, c in zip(scann_table, table, count) if c]
    assert np.mean(overlap) >= 0.9


@pytest.fixture(scope="module")
def setup():
    from tfsoft.training import prepare_data

    config = load_config("configs/lastfm_in_batch.yaml", [*BASE, "soft_target.num_neighbours=3",
                                                          "soft_target.temperature=2"])
    return config, prepare_data(config.data)


def _model(config, prepared):
    from tfsoft.training import build_model, create_variables

    model = build_model(config, prepared)
    create_variables(model, config)
    return model


def test_refresh_stores_the_neighbours_of_the_mean_item_vectors_and_follows_the_weights(setup):
    from tfsoft.losses.logits import prepare_embeddings

    config, prepared = setup
    model = _model(config, prepared)
    source = model.retrieval_loss.source
    with pytest.raises(ConfigError, match="no θ′ snapshot yet"):
        source.table
    source.refresh(model)
    items = model.candidate_tower(np.arange(model.num_items), training=False).numpy()
    vectors = _numpy_mean_item_vectors(source.histories, items)
    table, count = _numpy_top_k(vectors, source.active, 3)
    np.testing.assert_array_equal(source.counts, count)
    np.testing.assert_array_equal(source.table, table)
    np.testing.assert_allclose(source._items.numpy(), prepare_embeddings(items, "cosine").numpy(), atol=1e-6)
    assert source._tau == 0.1 and source.refreshes == 1

    before = source.table
    table_weights = model.candidate_tower.trainable_variables[0]
    table_weights.assign(np.random.default_rng(1).normal(size=table_weights.shape).astype(np.float32))
    source.refresh(model)
    assert source.refreshes == 2 and np.mean(source.table != before) > 0.5


@pytest.mark.parametrize("loss, mode", [("in_batch", "position"), ("full_softmax", "position"),
                                        ("sampled_softmax", "position"), ("in_batch", "window")])
def test_the_target_is_half_the_neighbours_restricted_softmax_plus_onehot(setup, loss, mode):
    """d = ½(restrict(softmax(q′·e′/(τT))) + onehot_y): rows sum to 1, argmax y (SoftRec Definition 1),
    equal to NumPy over the drawn neighbour's scores on the student's candidates."""
    from tfsoft.backend import tf
    from tfsoft.losses.soft_targets import mix_with_onehot
    from tfsoft.model import TrainingStepContext
    from tfsoft.training import training_examples

    config, prepared = setup
    if (loss, mode) != (config.loss.name, config.data.example_mode):
        config = load_config("configs/lastfm_in_batch.yaml", [*BASE, "soft_target.num_neighbours=3",
                                                              "soft_target.temperature=2", f"loss={loss}",
                                                              "loss.temperature=0.1", f"data.example_mode={mode}",
                                                              *(["model.query_tower=gru"] if mode == "window" else [])])
    model = _model(config, prepared)
    source = model.retrieval_loss.source
    source.refresh(model)
    examples = training_examples(config, prepared)
    batch = {name: tf.constant(values[:48]) for name, values in examples.items()}
    encoded = model.encode(batch)
    context = TrainingStepContext(model, batch, encoded, training=True)
    scored = model.retrieval_loss.base.candidate_logits(encoded.query, encoded.positive, encoded.target, context)
    drawn = []
    draw = source.draw_neighbours
    source.draw_neighbours = lambda users: drawn.append(draw(users)) or drawn[-1]
    target = source.target(scored, context)
    mixed = mix_with_onehot(target, scored.positive_index, source.onehot_weight).numpy()

    users = examples["user"][:48][context.example_rows().numpy()]  # the user of every example (position)
    neighbours = drawn[0].numpy()
    counts, table = source.counts[users], source.table[users]
    assert all(n in row[:c] for n, row, c in zip(neighbours, table, counts))  # drawn among the K
    ids = scored.candidate_ids.numpy()
    queries, items = source._queries.numpy()[neighbours], source._items.numpy()[ids]  # ids [M] or [N, M]
    scores = queries @ items.T if ids.ndim == 1 else np.einsum("nd,nmd->nm", queries, items)
    logits = scores / (0.1 * 2.0)  # τ = 0.1, T = 2
    if scored.log_expected_count is not None:
        logits = logits - np.broadcast_to(scored.log_expected_count.numpy(), logits.shape)
    logits = np.where(scored.keep().numpy(), logits, -np.inf)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-4, atol=1e-6)
    onehot = np.eye(logits.shape[1])[scored.positive_index.numpy()]
    np.testing.assert_allclose(mixed, 0.5 * expected + 0.5 * onehot, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-5)
    assert np.all(mixed >= 0) and np.all(mixed.argmax(1) == scored.positive_index.numpy())


def test_draws_are_uniform_over_the_k_neighbours(setup):
    config, prepared = setup
    model = _model(config, prepared)
    source = model.retrieval_loss.source
    source.refresh(model)
    user = int(np.flatnonzero(source.counts == 3)[0])
    draws = source.draw_neighbours(np.full(6000, user)).numpy()
    values, frequency = np.unique(draws, return_counts=True)
    assert sorted(values) == sorted(source.table[user]) and np.all(np.abs(frequency / 6000 - 1 / 3) < 0.03)
    lonely = np.flatnonzero(source.counts == 0)  # users without training data: the zero query (user 0)
    assert len(lonely) == 0 or np.all(source.draw_neighbours(lonely).numpy() == 0)


def test_a_tiny_run_trains_refreshing_each_epoch_and_evaluates_without_neighbour_state(tmp_path):
    from tfsoft.backend import keras
    from tfsoft.loaded_run import evaluate_run
    from tfsoft.train_run import train_run

    refreshes = []
    seen = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: refreshes.append(seen.model.retrieval_loss.source.refreshes))
    config = load_config("configs/lastfm_in_batch.yaml", [*BASE, "train.epochs=2", "train.steps_per_epoch=2"])
    run = tmp_path / "run"
    metrics = train_run(config, run, callbacks=[seen])
    assert refreshes == [1, 2]  # θ′ refreshed at each epoch start
    with h5py.File(run / "checkpoints" / "best.weights.h5") as weights:
        names = []
        weights.visit(names.append)
    assert not any("neighbour" in name for name in names)
    assert np.isfinite(metrics["test"]["ndcg@10"])
    assert evaluate_run(run)["test"]["ndcg@10"] == metrics["test"]["ndcg@10"]


def test_neighbour_section_validation():
    section = parse_config({"soft_target": "neighbour"}).soft_target
    assert (section.alpha, section.temperature, section.num_neighbours, section.refresh, section.index) == (
        0.5, 1.0, 10, "epoch", "brute_force")
    with pytest.raises(ConfigError, match="soft_target.num_neighbours"):
        parse_config({"soft_target": {"name": "neighbour", "num_neighbours": 0}})
    with pytest.raises(ConfigError, match="key 'k' is not read by soft-target source 'neighbour'"):
        parse_config({"soft_target": {"name": "neighbour", "k": 5}})
    with pytest.raises(ConfigError, match="soft_target.refresh"):
        parse_config({"soft_target": {"name": "neighbour", "refresh": "step"}})
    with pytest.raises(ConfigError, match="soft_target.temperature"):
        parse_config({"soft_target": {"name": "neighbour", "temperature": 0}})
