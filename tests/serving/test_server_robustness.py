"""``tfsoft serve`` against hostile bodies and broken exports, on a tiny hand-written SavedModel
(no training: each test takes a second or two).

* bodies nested far deeper than any input's rank get TF Serving's 400 JSON error and at most
  one log line, never a plain-text 500 with a traceback;
* a version that failed to load is retried once its directory changes (files copied in later,
  ``cp -r`` style), and not retried while it stays the same;
* the ``tfsoft serve`` banner never lists a version that failed: it says nothing is served, and why.
"""

import contextlib
import logging
import re
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest
import requests
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from tfsoft.backend import tf
from tfsoft.serving import repository as repository_module
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.server import ModelServer

from tests.serving.test_server import read_line

TIMEOUT = 30  # seconds: any request, any wait for the poller


class _Tiny(tf.Module):
    """``serving_default``: history int64 [batch, length] -> item_ids int64 / scores float32 [batch, 1]."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="history")])
    def serve(self, history):
        total = tf.reduce_sum(history, axis=1, keepdims=True)
        return {"item_ids": total, "scores": tf.cast(total, tf.float32)}


@pytest.fixture(scope="module")
def good_version(tmp_path_factory):
    """A loadable version directory, to copy into base paths."""
    path = tmp_path_factory.mktemp("tiny") / "good"
    module = _Tiny()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def broken_version(path):
    """A version directory TF cannot load (what an interrupted copy leaves)."""
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"not a SavedModel")
    return path


class _Lines(logging.Handler):
    """Every line the server logs, tracebacks included."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
        self.formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record):
        self.lines.extend(self.format(record).splitlines())


@contextlib.contextmanager
def logged_lines():
    """The lines logged inside the block by the server's loggers. Enter it after the server started:
    uvicorn's logging setup (at each server start) drops the handlers of its loggers, which do not
    propagate to the root logger, so pytest's caplog would not see their tracebacks."""
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "starlette", "tfsoft")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def wait_for(condition, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rest_status(server):
    response = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/recs", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["model_version_status"]


def nested(depth, leaf="1"):
    return "[" * depth + leaf + "]" * depth


DEEP_BODIES = [
    # 65 levels: past NumPy's 64 dimensions (146 bytes: was a ValueError -> plain-text 500)
    ('{"instances": %s}' % nested(65), "'instances' input 'history' must have rank 2"),
    ('{"instances": %s}' % nested(100), "'instances' input 'history' must have rank 2"),
    ('{"inputs": %s}' % nested(300), "'inputs' input 'history' must have rank 2"),
    ('{"inputs": {"history": %s}}' % nested(3), "'inputs' input 'history' must have rank 2"),
    ('{"instances": [{"history": %s}]}' % nested(500), "'instances' input 'history' must have rank 2"),
    # past the JSON decoder's recursion limit (was a RecursionError -> 500 and ~3,000 traceback lines)
    ('{"instances": %s}' % nested(3000), "nested too deeply"),
    ('{"instances": %s}' % nested(100_000), "nested too deeply"),
    (nested(100_000), "nested too deeply"),
    ('{"instances": [[1]], "signature_name": %s}' % nested(900, '"x"'), "'signature_name' must be a string"),
    ('{"instances": [{"b64": %s}]}' % nested(900, '"x"'), "is not of expected type: int64"),
]


def test_deeply_nested_bodies_get_a_400_json_error_and_at_most_one_log_line(good_version, tmp_path):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    with ModelServer(base, "recs", rest_port=0, poll_seconds=0) as server, logged_lines() as log_lines:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/recs:predict"
        for body, message in DEEP_BODIES:
            response = requests.post(url, data=body.encode(), timeout=TIMEOUT)
            assert response.status_code == 400, (body[:80], response.status_code, response.text[:300])
            assert response.headers["content-type"] == "application/json", response.text[:300]
            assert message in response.json()["error"], (body[:80], response.json())
        assert len(log_lines) <= len(DEEP_BODIES), "\n".join(log_lines[:40])
        assert not any("Traceback" in line for line in log_lines), "\n".join(log_lines[:40])
        ok = requests.post(url, json={"instances": [[1, 2], [3, 4]]}, timeout=TIMEOUT)
        assert ok.status_code == 200 and ok.json()["predictions"] == [{"item_ids": [3], "scores": [3.0]},
                                                                      {"item_ids": [7], "scores": [7.0]}]


def test_an_unforeseen_server_error_is_a_json_500_and_one_log_line(good_version, tmp_path, monkeypatch):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    with ModelServer(base, "recs", rest_port=0, poll_seconds=0) as server, logged_lines() as log_lines:
        def bug(*args, **kwargs):
            raise KeyError("a bug\nover two lines")

        monkeypatch.setattr(server.repository, "get", bug)
        response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/recs:predict",
                                 json={"instances": [[1]]}, timeout=TIMEOUT)
        assert response.status_code == 500 and "KeyError" in response.json()["error"], response.text
        assert len(log_lines) == 1 and "KeyError" in log_lines[0], log_lines


def counted_loads(monkeypatch):
    """The versions the repository tries to load, in order."""
    attempts = []
    real = repository_module.LoadedVersion

    def counting(path, version, **kwargs):
        attempts.append(version)
        return real(path, version, **kwargs)

    monkeypatch.setattr(repository_module, "LoadedVersion", counting)
    return attempts


def fix(version_dir, good_version):
    """Copy a good export over a broken version directory, as ``cp -r good/. 2/`` does."""
    (version_dir / "saved_model.pb").unlink()
    shutil.copytree(good_version, version_dir, dirs_exist_ok=True)


def test_a_failed_version_is_retried_once_its_directory_changes(good_version, tmp_path, monkeypatch):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    broken_version(base / "2")
    attempts = counted_loads(monkeypatch)
    repository = ModelRepository(base, "recs", poll_seconds=0)
    with logged_lines() as log_lines:
        for _ in range(6):  # 2 fails once; while its directory stays the same it is not tried or logged again
            repository.refresh()
        assert repository.get("recs").version == 1  # the older version serves meanwhile
    assert attempts.count(2) == 1, attempts
    assert sum("version 2 failed to load" in line for line in log_lines) == 1, log_lines
    failed = repository.status("recs", 2)[0]
    assert failed["state"] == "END" and "saved_model.pb" in failed["status"]["error_message"], failed

    fix(base / "2", good_version)
    assert repository.refresh() == [2]
    assert attempts.count(2) == 2, attempts
    assert repository.status("recs") == [{"version": "2", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]
    assert repository.failures() == {}


def test_a_version_that_fails_gives_its_place_to_the_next_older_one(good_version, tmp_path, monkeypatch):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    broken_version(base / "2")
    attempts = counted_loads(monkeypatch)
    assert ModelRepository(base, "recs", poll_seconds=0).refresh() == [1]  # in the same scan, not a poll later
    assert attempts == [2, 1]


def test_a_failed_version_that_vanishes_is_forgotten(good_version, tmp_path):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    broken_version(base / "2")
    repository = ModelRepository(base, "recs", poll_seconds=0)
    repository.refresh()
    assert list(repository.failures()) == [2]
    shutil.rmtree(base / "2")
    assert repository.refresh() == [1] and repository.failures() == {}
    assert [entry["version"] for entry in repository.status("recs")] == ["1"]


def test_the_only_version_fails_then_is_served_once_fixed(good_version, tmp_path):
    """GET /v1/models/NAME: END with the load error, then AVAILABLE once the poller retried the fixed copy."""
    base = tmp_path / "model"
    broken_version(base / "1")
    with ModelServer(base, "recs", rest_port=0, poll_seconds=0.1) as server:
        [entry] = rest_status(server)
        assert entry["version"] == "1" and entry["state"] == "END", entry
        assert entry["status"]["error_code"] != "OK" and "saved_model.pb" in entry["status"]["error_message"], entry
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/recs:predict"
        missing = requests.post(url, json={"instances": [[1]]}, timeout=TIMEOUT)
        assert missing.status_code == 404 and "Latest(recs)" in missing.json()["error"]

        fix(base / "1", good_version)
        wait_for(lambda: rest_status(server)[0]["state"] == "AVAILABLE", "the fixed version")
        assert rest_status(server) == [{"version": "1", "state": "AVAILABLE",
                                        "status": {"error_code": "OK", "error_message": ""}}]
        answer = requests.post(url, json={"instances": [[1, 2]]}, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.json()["predictions"] == [{"item_ids": [3], "scores": [3.0]}]
        banner = server.banner()
        assert banner.startswith(f"serving model 'recs' (versions ['1']) from '{base}'") and "failed" not in banner


def test_tfsoft_serve_banner_says_nothing_is_served_and_why(good_version, tmp_path):
    """The real command: its first stdout line, then it keeps polling and serves the fixed version."""
    base = tmp_path / "model"
    broken_version(base / "1")
    process = subprocess.Popen([sys.executable, "-m", "tfsoft.cli", "serve", "--export-dir", str(base),
                                "--model-name", "recs", "--port", "0", "--poll-seconds", "0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = read_line(process.stdout, timeout=120)
        assert "(versions" not in line and "NOT served" in line, line
        assert "version 1 failed to load" in line and "saved_model.pb" in line, line
        assert "polling every 0.1s for new or fixed versions" in line, line
        port = re.search(r"REST on http://127\.0\.0\.1:(\d+)", line)
        assert port, line
        fix(base / "1", good_version)
        url = f"http://127.0.0.1:{port.group(1)}/v1/models/recs"
        wait_for(lambda: requests.get(url, timeout=TIMEOUT).json()["model_version_status"][0]["state"] == "AVAILABLE",
                 "the fixed version")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def test_banner_names_served_versions_only(good_version, tmp_path):
    base = tmp_path / "model"
    shutil.copytree(good_version, base / "1")
    broken_version(base / "2")
    with ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0) as server:
        banner = server.banner()
        assert banner.startswith(f"serving model 'recs' (versions ['1']) from '{base}': REST on "
                                 f"http://127.0.0.1:{server.rest_port}, gRPC on 127.0.0.1:{server.grpc_port}"), banner
        assert "version 2 failed to load" in banner, banner
        assert [(s["version"], s["state"]) for s in rest_status(server)] == [("2", "END"), ("1", "AVAILABLE")]
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:  # gRPC status: the same
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "recs"
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=TIMEOUT)
        failed, served = status.model_version_status
        assert (failed.version, failed.state, failed.status.error_code) == (
            2, get_model_status_pb2.ModelVersionStatus.END, error_codes_pb2.UNKNOWN)
        assert "saved_model.pb" in failed.status.error_message
        assert (served.version, served.state, served.status.error_code) == (
            1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, error_codes_pb2.OK)
    empty = tmp_path / "empty"
    empty.mkdir()
    with ModelServer(empty, "recs", rest_port=0, poll_seconds=2) as server:
        banner = server.banner()
        assert "NOT served" in banner and "no version directory" in banner and "polling every 2s" in banner, banner
