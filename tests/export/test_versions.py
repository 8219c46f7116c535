"""Version directories: atomic publication, no overwrite, nothing visible from a killed export."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfsoft.errors import ExportError
from tfsoft.export.versions import list_versions, next_version, publish_version
from tfsoft.export.warmup import MAX_WARMUP_RECORDS, predict_request, read_warmup_requests, write_warmup_requests

ROOT = Path(__file__).resolve().parents[2]


def test_versions_are_integers_published_by_rename_and_never_overwritten(tmp_path):
    base = tmp_path / "model"
    assert list_versions(base) == [] and next_version(base) == 1
    with publish_version(base) as (staging, version):
        (staging / "saved_model.pb").write_bytes(b"x")
        assert version == 1 and list_versions(base) == []  # not visible before the block ends
    (base / "notes").mkdir()
    (base / "7.bak").mkdir()
    assert list_versions(base) == [1] and (base / "1" / "saved_model.pb").read_bytes() == b"x"
    with publish_version(base, 5):
        pass
    assert list_versions(base) == [1, 5] and next_version(base) == 6
    with pytest.raises(ExportError, match=r"version 5 already exists .* \(next free version: 6\)"):
        with publish_version(base, 5):
            pass
    with pytest.raises(ExportError, match="positive integer; got 0"):
        with publish_version(base, 0):
            pass


def test_a_failing_export_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with publish_version(tmp_path) as (staging, _):
            (staging / "half").write_text("written")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_export_leaves_no_visible_version_and_is_cleaned_up_later(tmp_path):
    script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r})\n"
              "from tfsoft.export.versions import publish_version\n"
              f"with publish_version({str(tmp_path)!r}) as (staging, version):\n"
              "    (staging / 'saved_model.pb').write_bytes(b'half')\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    leftovers = [entry.name for entry in tmp_path.iterdir()]
    assert list_versions(tmp_path) == [] and len(leftovers) == 1 and leftovers[0].startswith(".staging-1-")
    with publish_version(tmp_path) as (_, version):
        assert version == 1
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["1"]  # the abandoned staging dir is gone


def test_warmup_requests_round_trip_and_are_capped(tmp_path):
    import numpy as np

    requests = [predict_request({"history": np.array([[1, 2]])}, signature="serving_default"),
                predict_request({"user_id": np.array(["a"], dtype=object)}, signature="top_k_excluding")]
    path = tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    assert write_warmup_requests(path, requests) == 2
    assert read_warmup_requests(path) == requests
    with pytest.raises(ExportError, match=f"1..{MAX_WARMUP_RECORDS} requests; got 1001"):
        write_warmup_requests(path, requests[:1] * 1001)
    assert read_warmup_requests(path) == requests  # the refused write did not touch the file
