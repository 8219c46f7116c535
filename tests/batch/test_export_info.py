"""What a batch job reads about an export: from tfsoft_export.json, or from the signatures alone."""

import shutil

import pytest

from tfsoft.batch.export_info import resolve_export, version_directory
from tfsoft.errors import ExportError


def test_base_path_resolves_to_the_newest_version(string_export, tmp_path):
    info = resolve_export(string_export.base)
    assert info.path == string_export.base / "1" and info.version == 1 and info.name == "string_model"
    assert (info.inputs, info.user_dtype, info.item_dtype, info.k, info.index) == (
        ("user_id",), "string", "string", 10, "brute_force")
    assert "top_k_excluding" in info.signatures
    assert resolve_export(string_export.base / "1") == info
    with pytest.raises(ExportError, match="does not exist"):
        version_directory(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="neither saved_model.pb nor integer version"):
        version_directory(tmp_path / "empty")


def test_without_metadata_the_signatures_describe_the_export(history_export, tmp_path):
    copy = tmp_path / "model" / "7"
    shutil.copytree(history_export.base / "1", copy)
    (copy / "assets.extra" / "tfsoft_export.json").unlink()
    info = resolve_export(tmp_path / "model")
    assert (info.version, info.inputs, info.user_dtype, info.item_dtype, info.index) == (
        7, ("history",), "int64", "int64", "unknown")
    assert info.k in (0, 10)  # the item_ids dimension is static only for some indexes
    assert {"serving_default", "top_k_excluding"} <= set(info.signatures)
