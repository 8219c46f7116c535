"""bench/bench_soft_targets.py's bookkeeping: variant names and joining per-tower result files."""


import numpy as np
import pytest

from tests.bench_helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_soft_targets")


def run(seed, recall, ndcg):
    metrics = {"recall@10": recall, "ndcg@10": ndcg}
    return {"seed": seed, "validation": dict(metrics), "test": dict(metrics)}


def test_variant_names_set_alpha_and_temperature(bench):
    loss, soft = bench.parse_variant("ckd/a0.7/t6")
    assert loss == bench.FULL
    assert "soft_target.alpha=0.7" in soft and "soft_target.temperature=6" in soft
    assert not any(s in soft for s in ("soft_target.alpha=0.5", "soft_target.temperature=3"))
    with pytest.raises(SystemExit, match="no soft target"):
        bench.parse_variant("base/a0.5")
    with pytest.raises(SystemExit, match="neither"):
        bench.parse_variant("ckd/x3")


def test_merging_per_tower_files_keeps_held_seeds_and_recomputes_the_summary(bench):
    state = {"results": {"gru": {"base": {"runs": [run(0, 0.2, 0.1)]}}}}
    other = {"results": {"gru": {"base": {"runs": [run(0, 0.9, 0.9), run(2, 0.4, 0.3), run(1, 0.3, 0.2)]}},
                         "sasrec": {"ckd": {"runs": [run(1, 0.5, 0.25)]}}}}
    assert bench.merge_results(state, other) == 3
    gru = state["results"]["gru"]["base"]
    assert [r["seed"] for r in gru["runs"]] == [0, 1, 2]
    assert gru["runs"][0]["test"]["recall@10"] == 0.2  # the held seed 0 is not replaced
    summary = gru["summary"]["test_recall@10"]
    assert summary["mean"] == pytest.approx(np.mean([0.2, 0.3, 0.4]))
    assert summary["std"] == pytest.approx(np.std([0.2, 0.3, 0.4], ddof=1))  # sample std, as bench/common.py
    assert state["results"]["sasrec"]["ckd"]["summary"]["test_ndcg@10"]["mean"] == pytest.approx(0.25)
    assert bench.merge_results(state, other) == 0


def test_default_variants_keep_the_library_recipe_and_read_default_base_teachers(bench, tmp_path):
    overrides = bench.variant_overrides("ml-1m", "sasrec", "default_ckd/a0.8/t1", 2, 20, None, tmp_path)
    config = bench.variant_config(overrides, "sasrec", "default_ckd/a0.8/t1")
    assert config.loss.name == "in_batch" and config.loss.mixed_negatives and config.loss.log_q_correction
    assert config.model.query_tower.name == "sasrec" and config.data.window is None
    assert (config.soft_target.alpha, config.soft_target.temperature) == (0.8, 1.0)
    teacher = tmp_path / "ml-1m" / "gru" / "default_base" / "seed2"
    assert [str(p) for p in config.soft_target.teacher_runs] == [str(teacher)]
    assert bench.teacher_needs("ml-1m", "sasrec", "default_ens", 2, tmp_path) == [
        ("sasrec", tmp_path / "ml-1m" / "sasrec" / "default_base" / "seed2"), ("gru", teacher)]
    assert (config.train.epochs, config.train.seed) == (20, 2)


def test_tower_recipe_variants_are_unchanged_by_the_default_recipe(bench, tmp_path):
    overrides = bench.variant_overrides("ml-1m", "sasrec", "ckd/a0.8/t1", 0, 30, None, tmp_path)
    config = bench.variant_config(overrides, "sasrec", "ckd/a0.8/t1")
    assert config.loss.name == "full_softmax" and config.loss.temperature == 0.1
    assert config.model.query_tower.dropout == 0.3  # configs/towers/sasrec_ssm.yaml's recipe
    assert [str(p) for p in config.soft_target.teacher_runs] == [str(tmp_path / "ml-1m" / "gru" / "base" / "seed0")]
    base = bench.variant_config(bench.variant_overrides("ml-1m", "sasrec", "default_base", 0, 20, None, tmp_path),
                                "sasrec", "default_base")
    assert base.soft_target is None or base.soft_target.name is None
    assert bench.teacher_needs("ml-1m", "sasrec", "default_base", 0, tmp_path) == []
    # a run without --variants trains the configs/towers/ recipes only; default_ ones are asked for by name
    assert "ssm_ens" in bench.DEFAULT_VARIANTS and not any(v.startswith("default_") for v in bench.DEFAULT_VARIANTS)
