"""configs/soft_targets/: the base recipes and the best soft-target recipe per backbone are exactly
what bench/bench_soft_targets.py measured (bench/results/soft_targets_lastfm.json)."""

from pathlib import Path

import pytest

from tests.bench_helpers import load_bench

from tfsoft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "soft_targets"
FILES = {"gru": "gru4rec", "sasrec": "sasrec"}


@pytest.fixture(scope="module")
def bench():
    return load_bench("bench_soft_targets")


def bench_config(bench, tower, variant, **runs):
    loss, soft = bench.parse_variant(variant)
    return load_config(ROOT / bench.TOWERS[tower], [*loss, *(s.format(**runs) for s in soft)])


@pytest.mark.parametrize("tower", sorted(FILES))
def test_base_configs_are_the_benchmarks_base(bench, tower):
    config = load_config(CONFIGS / f"{FILES[tower]}_base.yaml")
    assert config.model_dump() == bench_config(bench, tower, "base").model_dump()
    assert config.soft_target is None and config.loss.name == "full_softmax"


@pytest.mark.parametrize("tower", sorted(FILES))
def test_best_configs_are_the_benchmarks_best_variant_with_the_other_base_as_teacher(bench, tower):
    other = "sasrec" if tower == "gru" else "gru"
    config = load_config(CONFIGS / f"{FILES[tower]}_best.yaml")
    teacher = f"runs/soft_targets/{FILES[other]}_base"
    # the teacher is the run directory the other backbone's base config tells you to train
    assert f"--run-dir {teacher}" in (CONFIGS / f"{FILES[other]}_base.yaml").read_text()
    variant = bench.BEST[tower]
    expected = bench_config(bench, tower, variant, teacher=f"runs/soft_targets/{FILES[tower]}_base", other=teacher)
    assert config.model_dump() == expected.model_dump()
    assert config.soft_target.teacher_runs == [teacher]


def test_a_best_config_without_its_teacher_run_is_an_error_naming_the_run(tmp_path, monkeypatch):
    from tfsoft.runs import RunError
    from tfsoft.training import build_model, prepare_data

    monkeypatch.chdir(tmp_path)  # runs/soft_targets/... is relative: nothing there
    config = load_config(CONFIGS / "sasrec_best.yaml", ["model.embedding_dim=8"])
    with pytest.raises(RunError, match="runs/soft_targets/gru4rec_base"):
        build_model(config, prepare_data(config.data))
