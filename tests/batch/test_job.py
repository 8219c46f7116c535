"""``tfsoft retrieve`` in process: answers equal a NumPy reference; sharding, restarts, reruns,
rejects, unknown users and missing columns, on tiny exports (tests/batch/exports.py)."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from tfsoft.batch.job import RetrieveOptions, run_retrieval
from tfsoft.batch.output import OutputError
from tfsoft.batch.sharding import ShardSpec
from tfsoft.cli import main

from tests.batch.helpers import assert_same_results, read_output, read_rejects, users_table


def _options(export, users, out, **kwargs):
    return RetrieveOptions(model=str(export.base), input=str(users), output=str(out), k=kwargs.pop("k", 5),
                           batch_size=kwargs.pop("batch_size", 16), part_size=kwargs.pop("part_size", 40),
                           progress=False, **kwargs)


@pytest.fixture(scope="module")
def history_users(history_export, tmp_path_factory):
    path = tmp_path_factory.mktemp("users") / "users.parquet"
    pq.write_table(users_table(history_export, 150), path, row_group_size=50)
    return path


def _check_against_reference(export, users: pa.Table, out, k, exclude_seen, policy="popular"):
    got = {row["user_id"]: row for row in read_output(out).to_pylist()}
    for user, history in zip(users.column("user_id").to_pylist(), users.column("history").to_pylist()):
        known = (user in export.users) if export.inputs == ("user_id",) else any(i in export.items for i in history)
        if not known:
            if policy == "skip":
                assert user not in got
                continue
            popular = [item for item in export.items if not (exclude_seen and item in history)][:k]
            assert got[user]["source"] == "popular" and got[user]["item_ids"] == popular
            assert got[user]["scores"] is None
            continue
        items, scores = export.reference(user, history, k, exclude=history if exclude_seen else ())
        row = got[user]
        assert row["source"] == "model" and row["item_ids"] == items, user
        np.testing.assert_allclose(row["scores"], scores, atol=1e-5)
        assert row["model"] == export.base.name and row["model_version"] == 1


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_history_export_answers_equal_numpy_reference(history_export, history_users, tmp_path, exclude_seen):
    summary = run_retrieval(_options(history_export, history_users, tmp_path / "out", exclude_seen=exclude_seen))
    users = pq.read_table(history_users)
    _check_against_reference(history_export, users, tmp_path / "out", 5, exclude_seen)
    assert summary.complete and summary.parts_written == 4 and not summary.noop  # 150 rows in parts of 40
    unknown = sum(not any(item in history_export.items for item in h) for h in users.column("history").to_pylist())
    assert unknown >= 21  # the cold users, and users with empty histories
    assert summary.counts == {"users_read": 150, "users_written": 150, "users_unknown": unknown, "rows_rejected": 0}
    # within a part, rows keep the input order
    first = pq.read_table(tmp_path / "out" / "part-00000-of-00001-000000.parquet").column("user_id").to_pylist()
    assert first == users.column("user_id").to_pylist()[:40]


def test_string_ids_and_skip_policy(string_export, tmp_path):
    users = pa.table({"user_id": ["u3", "nobody", "u1", "u40", "", "u2"]})
    pv.write_csv(users, tmp_path / "users.csv")
    summary = run_retrieval(_options(string_export, tmp_path / "users.csv", tmp_path / "out", k=10,
                                     unknown_users="skip"))
    _check_against_reference(string_export, users.filter(pa.array([True, True, True, True, False, True])).append_column(
        "history", pa.array([[]] * 5, pa.list_(pa.string()))), tmp_path / "out", 10, False, "skip")
    assert summary.counts == {"users_read": 6, "users_written": 4, "users_unknown": 1, "rows_rejected": 1}
    assert read_output(tmp_path / "out").schema.field("item_ids").type == pa.list_(pa.string())
    assert read_rejects(tmp_path / "out").to_pylist()[0]["row"] == 5
    bar = io.StringIO()  # a progress bar (as on a terminal) counts users with their rate
    options = _options(string_export, tmp_path / "users.csv", tmp_path / "bar", k=10)
    options.progress = True
    run_retrieval(options, stream=bar)
    assert "shard 0/1: 6.00 users" in bar.getvalue() and "users/s]" in bar.getvalue()


def test_sharded_output_equals_unsharded(history_export, history_users, tmp_path):
    whole = run_retrieval(_options(history_export, history_users, tmp_path / "whole"))
    out = tmp_path / "sharded"
    summaries = [run_retrieval(_options(history_export, history_users, out, shard=ShardSpec(i, 3)))
                 for i in (2, 0, 1)]
    assert [s.complete for s in summaries] == [False, False, True]  # _SUCCESS once the last shard is done
    got = read_output(out)
    assert len(set(got.column("user_id").to_pylist())) == got.num_rows == 150  # disjoint shards, no duplicate
    assert_same_results(got, read_output(tmp_path / "whole"))
    assert 20 < summaries[0].counts["users_read"] < 80
    import json

    success = json.loads((out / "_SUCCESS").read_text())
    assert success["counts"] == whole.counts and success["shards"] == 3


def test_rerun_is_a_noop_and_another_job_is_refused(history_export, history_users, tmp_path):
    out = tmp_path / "out"
    run_retrieval(_options(history_export, history_users, out))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_retrieval(_options(history_export, history_users, out))
    assert again.noop and again.counts["users_read"] == 150
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    with pytest.raises(OutputError, match="another job"):
        run_retrieval(_options(history_export, history_users, out, k=3))
    redo = run_retrieval(_options(history_export, history_users, out, k=3, overwrite=True))
    assert not redo.noop and redo.parts_written == 4
    assert {len(items) for items in read_output(out).column("item_ids").to_pylist()} == {3}


def test_bad_rows_go_to_rejects_with_row_numbers(history_export, tmp_path):
    text = ("user_id,history\n1,\"101 102\"\nabc,\"101\"\n3,\"101 x\"\n4\n5,\"[103, 104]\"\n,\"101\"\n"
            "7,\"[101,\"\n8,\"105\"\n")
    (tmp_path / "users.csv").write_text(text)
    summary = run_retrieval(_options(history_export, tmp_path / "users.csv", tmp_path / "out", part_size=3))
    rejects = read_rejects(tmp_path / "out").to_pylist()
    assert [(r["row"], r["column"]) for r in rejects] == [(2, "user_id"), (3, "history"), (4, "*"), (6, "user_id"),
                                                         (7, "history")]
    assert rejects[0]["file"].endswith("users.csv") and rejects[1]["reason"].startswith("history: item 2 ('x')")
    assert read_output(tmp_path / "out").column("user_id").to_pylist() == [1, 5, 8]
    assert summary.counts["rows_rejected"] == 5 and summary.counts["users_written"] == 3


def test_missing_columns_fail_before_any_output(history_export, tmp_path, capsys):
    pq.write_table(pa.table({"uid": [1], "items": [[101]]}), tmp_path / "users.parquet")
    out = tmp_path / "out"
    code = main(["retrieve", "--model", str(history_export.base), "--input", str(tmp_path / "users.parquet"),
                 "--output", str(out)])
    message = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "users.parquet' has no column 'user_id', 'history'" in message
    assert "found: uid, items" in message and "expected: user_id, history" in message
    code = main(["retrieve", "--model", str(history_export.base), "--input", str(tmp_path / "users.parquet"),
                 "--output", str(out), "--user-column", "uid", "--history-column", "items", "--k", "3", "--json"])
    assert code == 0 and read_output(out).column("user_id").to_pylist() == [1]
    assert main(["retrieve", "--model", str(history_export.base), "--input", str(tmp_path / "users.parquet"),
                 "--output", str(tmp_path / "o2"), "--k", "11", "--user-column", "uid",
                 "--history-column", "items"]) == 2
    assert "--k 11 is more than the 10 results" in capsys.readouterr().err


CHILD = """
import sys, time
from tfsoft.batch import output
write = output.write_parquet
def slow(path, table, metadata=None):
    write(path, table, metadata)
    if metadata is not None:
        time.sleep(0.4)  # the results are in their temporary file, not yet renamed
output.write_parquet = slow
from tfsoft.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_job_restarts_to_the_uninterrupted_output(history_export, history_users, tmp_path):
    args = ["retrieve", "--model", str(history_export.base), "--input", str(history_users), "--k", "5",
            "--batch-size", "8", "--part-size", "10", "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args, "--output", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert child.poll() is None, "the job ended before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    committed = len(list(out.glob("part-*.parquet")))
    assert 3 <= committed < 15 and not (out / "_SUCCESS").exists()
    summary = run_retrieval(_options(history_export, history_users, out, batch_size=8, part_size=10))
    assert summary.parts_skipped == committed and summary.parts_written == 15 - committed and summary.complete
    assert not [p for p in out.rglob(".*")]  # no temporary left
    whole = sorted(p.name for p in (tmp_path / "whole").glob("part-*.parquet"))
    assert sorted(p.name for p in out.glob("part-*.parquet")) == whole
    for name in whole:
        assert pq.read_table(out / name).equals(pq.read_table(tmp_path / "whole" / name)), name
    got = read_output(out)
    assert got.num_rows == 150 == len(set(got.column("user_id").to_pylist()))
    assert (out / "_SUCCESS").read_text() .count('"users_read": 150') == 1


def test_a_real_tfsoft_export_answers_as_its_signature(tiny_run, tmp_path):
    """An export written by ``tfsoft export`` from a trained run (int64 ids, history tower): the job's
    rows equal the SavedModel's ``top_k_excluding`` answers for the same users."""
    from tfsoft.backend import tf
    from tfsoft.export import export_run

    from tests.export.reference import data_file

    export_run(tiny_run, tmp_path / "export", index="brute_force", k=20)
    rows = pv.read_csv(data_file()).to_pylist()[:400]
    histories = {}
    for row in rows:
        histories.setdefault(row["session_id"], []).append(row["item_id"])
    users = pa.table({"user_id": list(histories), "history": list(histories.values())})
    pq.write_table(users, tmp_path / "users.parquet")
    summary = run_retrieval(RetrieveOptions(model=str(tmp_path / "export"), input=str(tmp_path / "users.parquet"),
                                            output=str(tmp_path / "out"), exclude_seen=True, progress=False))
    got = read_output(tmp_path / "out")
    assert summary.counts["users_read"] == len(histories) and got.num_rows == len(histories)
    assert {len(items) for items in got.column("item_ids").to_pylist()} == {20}
    import scann.scann_ops.py.scann_ops  # noqa: F401

    signature = tf.saved_model.load(str(tmp_path / "export" / "1")).signatures["top_k_excluding"]
    width = max(len(h) for h in histories.values())
    padded = np.asarray([h + [-1] * (width - len(h)) for h in histories.values()], np.int64)
    want = signature(history=tf.constant(padded), exclude_item_ids=tf.constant(padded))
    order = np.argsort(list(histories))
    assert got.column("item_ids").to_pylist() == want["item_ids"].numpy()[order].tolist()
    np.testing.assert_allclose(np.asarray(got.column("scores").to_pylist()), want["scores"].numpy()[order], atol=1e-5)
