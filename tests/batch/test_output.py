"""Part files: schema, atomic commit, committed-part discovery, temporaries; the manifests."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfsoft.batch import output
from tfsoft.batch.manifest import combine, finish_shard, read_json, shard_manifest
from tfsoft.batch.output import (OutputError, commit_part, committed_parts, remove_shard, remove_temporaries,
                                 result_schema, results_table)
from tfsoft.batch.rows import REJECT_SCHEMA
from tfsoft.batch.sharding import ShardSpec


def _results(users=(1, 2), dtype="int64"):
    schema = result_schema(dtype, dtype)
    items = np.asarray([10, 11, 12], np.int64) if dtype == "int64" else np.asarray([b"a", b"b", b"c"], object)
    return results_table(schema, np.asarray(users), items, np.asarray([0.5, 0.25, 0.125]), np.array([0, 2, 3]),
                         "recs", 4, "model")


def test_results_table_rows():
    assert _results().to_pylist() == [
        {"user_id": 1, "item_ids": [10, 11], "scores": [0.5, 0.25], "model": "recs", "model_version": 4,
         "source": "model"},
        {"user_id": 2, "item_ids": [12], "scores": [0.125], "model": "recs", "model_version": 4, "source": "model"}]
    strings = _results(np.asarray(["u", "v"], object), "string")
    assert strings.column("item_ids").to_pylist() == [["a", "b"], ["c"]]  # bytes from TF decoded
    popular = results_table(result_schema("int64", "int64"), np.array([3]), np.array([7]), None, np.array([0, 1]),
                            "recs", 4, "popular")
    assert popular.to_pylist()[0]["scores"] is None


def test_commit_writes_rejects_then_results_with_footer_metadata(tmp_path):
    rejects = pa.table({"file": ["f"], "row": [3], "column": ["user_id"], "reason": ["r"], "value": ["x"],
                        "user_id": [None]}, schema=REJECT_SCHEMA)
    path = commit_part(tmp_path, "00000-of-00001", 0, _results(), rejects, {"job": "J", "counts": {"a": 1}})
    assert path.name == "part-00000-of-00001-000000.parquet"
    assert pq.read_table(tmp_path / "_rejects" / path.name).num_rows == 1
    found = committed_parts(tmp_path, "00000-of-00001", "J")
    assert list(found) == [0] and found[0].metadata["counts"] == {"a": 1}
    assert committed_parts(tmp_path, "00001-of-00002", "J") == {}
    with pytest.raises(OutputError, match="another job"):
        committed_parts(tmp_path, "00000-of-00001", "OTHER")
    assert pq.read_table(tmp_path).num_rows == 2  # dataset readers skip _rejects


def test_failed_commit_leaves_nothing(tmp_path, monkeypatch):
    def broken(path, table, metadata=None):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(output, "write_parquet", broken)
    with pytest.raises(OSError):
        commit_part(tmp_path, "00000-of-00001", 0, _results(), REJECT_SCHEMA.empty_table(), {"job": "J"})
    assert list(tmp_path.iterdir()) == []


def test_temporaries_and_overwrite_touch_only_their_shard(tmp_path):
    commit_part(tmp_path, "00000-of-00002", 0, _results(), REJECT_SCHEMA.empty_table(), {"job": "J"})
    commit_part(tmp_path, "00001-of-00002", 0, _results(), REJECT_SCHEMA.empty_table(), {"job": "J"})
    (tmp_path / ".part-00000-of-00002-000001.parquet.x1.tmp.parquet").write_bytes(b"")
    (tmp_path / ".part-00001-of-00002-000001.parquet.x2.tmp.parquet").write_bytes(b"")
    assert [p.name for p in remove_temporaries(tmp_path, "00000-of-00002")] == [
        ".part-00000-of-00002-000001.parquet.x1.tmp.parquet"]
    (tmp_path / "_SUCCESS").write_text("{}")
    remove_shard(tmp_path, "00000-of-00002")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-00001-of-00002-000001.parquet.x2.tmp.parquet",
                                                         "part-00001-of-00002-000000.parquet"]


def test_success_is_written_by_the_last_shard_with_summed_counts(tmp_path):
    def manifest(index, job="J"):
        counts = {"users_read": 10 + index, "users_written": 9, "users_unknown": 1, "rows_rejected": index}
        return shard_manifest(job, ShardSpec(index, 2), {"model": {"version": 1}}, counts, [f"p{index}"],
                              [f"r{index}"] if index else [], 1.0)

    assert finish_shard(tmp_path, "00001-of-00002", manifest(1), "_shards", "_SUCCESS") is None
    assert not (tmp_path / "_SUCCESS").exists()
    combined = finish_shard(tmp_path, "00000-of-00002", manifest(0), "_shards", "_SUCCESS")
    assert combined == read_json(tmp_path / "_SUCCESS")
    assert combined["counts"] == {"users_read": 21, "users_written": 18, "users_unknown": 2, "rows_rejected": 1}
    assert combined["parts"] == ["p0", "p1"] and combined["rejects"] == ["r1"] and "shard" not in combined
    assert combine([manifest(1), manifest(0)]) == combined  # the same whichever shard finishes last
    assert json.loads((tmp_path / "_shards" / "00000-of-00002.json").read_text())["shard"] == 0
    # a shard manifest of another job does not complete this one
    (tmp_path / "_SUCCESS").unlink()
    assert finish_shard(tmp_path, "00000-of-00002", manifest(0, "K"), "_shards", "_SUCCESS") is None
