import pytest

from tfsoft.data import DATASETS, dataset_path, load_dataset
from tfsoft.errors import DataError


def test_lastfm_small_loads_by_name_with_known_statistics(lastfm):
    assert len(lastfm) == 52551
    assert lastfm["user"].nunique() == 1090 and lastfm["item"].nunique() == 3646
    assert DATASETS["lastfm_small"].statistics == {"interactions": 52551, "users": 1090, "items": 3646}


def test_env_variable_overrides_data_dir(tmp_path, monkeypatch):
    (tmp_path / "lastfm_small.csv").write_text("session_id,item_id,rating\n1,1,1\n1,2,1\n")
    monkeypatch.setenv("TFSOFT_DATA_DIR", str(tmp_path))
    assert dataset_path("lastfm_small") == tmp_path / "lastfm_small.csv"
    with pytest.raises(DataError, match=r"has \{'interactions': 2, 'users': 1, 'items': 2\}, expected"):
        load_dataset("lastfm_small")
    assert len(load_dataset("lastfm_small", check_statistics=False)) == 2


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match=r"unknown dataset 'lastfm'; known datasets: lastfm_small, ml-100k, ml-1m"):
        load_dataset("lastfm")
