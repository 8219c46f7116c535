"""Baselines that need no training, against hand-computed examples, and through tfsoft train."""

import json

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.data.ragged import Ragged
from tfsoft.towers.baselines import (
    FILL_IN, OneHotCandidateTower, ScoreTableTower, item_cosine, item_popularity, transition_probabilities,
)

# three training sequences over items 1..4 (0 = padding)
TRAIN = Ragged.from_rows([[1, 2, 3], [2, 3, 2, 4], [3, 4]])
V = 5


def test_popularity_counts_training_interactions():
    np.testing.assert_array_equal(item_popularity(TRAIN, V), [0, 1, 3, 3, 2])


def test_transitions_by_hand():
    # successors: 1 -> 2; 2 -> 3, 3, 4; 3 -> 2, 4; 4 -> none (no transition crosses sequences)
    expected = np.zeros((V, V))
    expected[1, 2] = 1.0
    expected[2, 3], expected[2, 4] = 2 / 3, 1 / 3
    expected[3, 2], expected[3, 4] = 1 / 2, 1 / 2
    np.testing.assert_allclose(transition_probabilities(TRAIN, V), expected, rtol=1e-6)


def test_item_cosine_by_hand_and_neighbours():
    # sequences holding each item: 1: {s0}; 2: {s0, s1}; 3: {s0, s1, s2}; 4: {s1, s2}
    got = item_cosine(TRAIN, V)
    assert got[1, 2] == pytest.approx(1 / np.sqrt(2))  # c = 1, |1| = 1, |2| = 2
    assert got[2, 3] == pytest.approx(2 / np.sqrt(6))
    assert got[3, 4] == pytest.approx(2 / np.sqrt(6))
    assert got[1, 4] == 0 and np.all(np.diag(got) == 0) and np.all(got[0] == 0) and np.allclose(got, got.T)
    top1 = item_cosine(TRAIN, V, neighbors=1)
    assert (top1[3] > 0).sum() == 2  # 2 and 4 tie for item 3's best neighbour: both kept
    assert (top1[1] > 0).sum() == 1 and top1[1, 2] == got[1, 2]


def test_score_table_tower_weights_recent_items_and_fills_in_with_popularity():
    popularity = item_popularity(TRAIN, V)
    tower = ScoreTableTower(popularity, transition_probabilities(TRAIN, V), history_items=2, decay=0.5)
    history = tf.constant([[0, 1, 3], [0, 0, 0]])  # left-padded, newest last
    scores = tower({"history": history}).numpy()
    table, pop = transition_probabilities(TRAIN, V), popularity / popularity.max()
    np.testing.assert_allclose(scores[0], table[3] + 0.5 * table[1] + FILL_IN * pop, rtol=1e-6)
    np.testing.assert_allclose(scores[1], FILL_IN * pop, rtol=1e-6)  # no history: popularity order
    plain = ScoreTableTower(popularity)({"history": history}).numpy()
    np.testing.assert_allclose(plain, np.tile(pop, (2, 1)), rtol=1e-6)
    np.testing.assert_array_equal(OneHotCandidateTower(V)(tf.range(V)).numpy(), np.eye(V))


def test_score_table_tower_long_histories_with_repeats_match_numpy():
    """Repeated items add their weights; only the last m items count; padding scores nothing."""
    rng = np.random.default_rng(3)
    items, width, m, decay = 40, 300, 250, 0.99
    table = rng.random((items, items)).astype(np.float32)
    table[0] = 0.0  # padding row, as the builders make it
    popularity = rng.integers(0, 50, items).astype(np.float64)
    history = rng.integers(1, 6, (4, width))  # five items, each repeated many times
    history[1, :120] = 0  # left padding
    history[2] = 0  # no history
    tower = ScoreTableTower(popularity, table, history_items=m, decay=decay, fill=0.01)
    got = tower({"history": tf.constant(history)}).numpy()
    pop = popularity / popularity.max()
    expected = np.zeros((4, items))
    for row in range(4):
        recent = history[row, -m:]
        for back, item in enumerate(recent[::-1]):
            expected[row] += decay ** back * table[item]
        expected[row] += 0.01 * pop
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("baseline", ["popularity", "item_transition", "item_knn"])
def test_tfsoft_train_writes_a_normal_run_for_a_baseline(tmp_path, capsys, baseline):
    from tfsoft.cli import main

    run = tmp_path / baseline
    assert main(["train", "--config", "configs/lastfm_in_batch.yaml", "--run-dir", str(run),
                 "--set", f"model.query_tower={baseline}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 0 and metrics["test"]["num_queries"] == 3173
    for name in ("config.yaml", "checkpoints/best.weights.h5", "checkpoints/last.weights.h5", "history.csv"):
        assert (run / name).is_file(), name
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", str(run), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == metrics["test"]
    assert main(["recommend", "--run-dir", str(run), "--user", "1", "--k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 5
    if baseline == "popularity":  # the same evaluator as every model: NumPy popularity ranking
        from tfsoft.config import load_config
        from tfsoft.training import prepare_data

        prepared = prepare_data(load_config(run / "config.yaml").data)
        order = np.argsort(-prepared.item_counts[1:], kind="stable")[:10] + 1
        hits = [targets[0] in order for targets in prepared.split.test.targets]
        assert metrics["test"]["recall@10"] == pytest.approx(np.mean(hits))


def test_baselines_refuse_a_feature_candidate_tower(lastfm):
    from tfsoft.config import parse_config
    from tfsoft.errors import ConfigError
    from tfsoft.training import build_model, prepare_data

    config = parse_config({"model": {"query_tower": "item_transition", "candidate_tower": "features"}})
    with pytest.raises(ConfigError, match=r"model.candidate_tower must be 'id', got 'features'"):
        build_model(config, prepare_data(config.data))
