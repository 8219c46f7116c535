"""``tfsoft serve`` end to end on lastfm_small: train -> export (both indexes) -> serve -> REST and
gRPC answers equal to an independent NumPy reference (:mod:`tests.export.reference`); TF
Serving-style errors; fuzzing; hot version swap. Every network call and pipe read has a deadline."""

import json
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfsoft.backend import tf
from tfsoft.export import export_run
from tfsoft.serving import Client, ServingError, pad_rows
from tfsoft.serving.server import ModelServer

from tests.export.reference import NumpyReference, same_ranking

K = 20
MAX_BATCH = 64
TIMEOUT = 30  # seconds: any single request or pipe read


@pytest.fixture(scope="module")
def reference(history_run):
    return NumpyReference.load(history_run)


@pytest.fixture(scope="module", params=["brute_force", "scann"])
def served(request, history_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve") / request.param
    export_run(history_run, base, index=request.param, k=K)
    with ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0.2, max_batch_size=MAX_BATCH) as server:
        yield request.param, base, server


def client_for(server, **kwargs):
    return Client("127.0.0.1", model="recs", rest_port=server.rest_port, grpc_port=server.grpc_port, **kwargs)


def read_line(stream, timeout=TIMEOUT) -> str:
    """One line from a subprocess pipe; fails after ``timeout`` seconds instead of hanging."""
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no line on the pipe within {timeout}s") from None


def test_rest_rows_rest_columns_and_grpc_answer_like_the_in_process_model(served, reference):
    kind, base, server = served
    users, histories = reference.queries(count=12, start=40)
    with client_for(server) as client:
        answers = {(protocol, fmt): client.recommend(histories=histories, protocol=protocol, format=fmt)
                   for protocol, fmt in (("rest", "row"), ("rest", "columnar"), ("grpc", "columnar"))}
    first = answers[("rest", "row")]
    assert all(answer == first for answer in answers.values())  # every protocol and format agree
    assert all(len(a["item_ids"]) == K for a in first)
    if kind == "brute_force":
        want, scores = reference.top_k(users, histories, K)
        for answer, w, s, c in zip(first, want, scores, reference.catalog(users, histories)):
            assert same_ranking(answer["item_ids"], w, s, c), (answer["item_ids"], w)
            np.testing.assert_allclose(answer["scores"], s, rtol=1e-4, atol=1e-5)
    else:  # the served ScaNN model answers like the same SavedModel run in process, close to exact search
        loaded = tf.saved_model.load(str(base / "1"))
        direct = loaded.signatures["serving_default"](history=tf.constant(pad_rows(histories)))
        assert [a["item_ids"] for a in first] == direct["item_ids"].numpy().tolist()
        want, _ = reference.top_k(users, histories, K)
        recall = np.mean([len(set(a["item_ids"]) & set(w)) / K for a, w in zip(first, want)])
        assert recall >= 0.9


def test_metadata_lists_the_signatures_and_status_shows_the_version(served):
    _, _, server = served
    with client_for(server) as client:
        assert client.status() == [{"version": "1", "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]
        metadata = client.metadata()
    assert metadata["model_spec"] == {"name": "recs", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["candidate_embedding", "query_embedding", "serving_default", "top_k_excluding"]
    assert sorted(signatures["serving_default"]["outputs"]) == ["item_ids", "scores"]
    assert signatures["top_k_excluding"]["inputs"]["exclude_item_ids"]["dtype"] == "DT_INT64"

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "recs"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "recs"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert sorted(signature_map.signature_def) == sorted(signatures)
    channel.close()


def test_excluding_items_through_the_server(served, reference):
    kind, _, server = served
    users, histories = reference.queries(count=4)
    with client_for(server) as client:
        plain = client.recommend(histories=histories)
        exclude = [a["item_ids"][:5] + h for a, h in zip(plain, histories)]  # top 5 + the whole history
        want, scores = reference.top_k(users, histories, K, exclude=exclude)
        catalogs = reference.catalog(users, histories, exclude)
        for protocol in ("rest", "grpc"):
            excluded = client.recommend(histories=histories, exclude=exclude, protocol=protocol)
            for answer, before, banned, w, s, c in zip(excluded, plain, exclude, want, scores, catalogs):
                assert not set(answer["item_ids"]) & set(banned)
                assert answer["item_ids"][:3] == [i for i in before["item_ids"] if i not in banned][:3]
                if kind == "brute_force":  # exact: equal to NumPy; ScaNN: approximate
                    assert same_ranking(answer["item_ids"], w, s, c), (answer["item_ids"], w)
                    np.testing.assert_allclose(answer["scores"], s, rtol=1e-4, atol=1e-5)


BAD_REST = [
    ("POST", ":predict", b"{not json", 400, "JSON Parse error"),
    ("POST", ":predict", b'{"signature_name": "serving_default"}', 400, "Missing 'inputs' or 'instances' key"),
    ("POST", ":predict", b'{"inputs": {"user_id": [1]}}', 400, "input size does not match signature"),
    ("POST", ":predict", b'{"instances": [["a", "b"]]}', 400, "is not of expected type: int64"),
    ("POST", ":predict", b'{"signature_name": "top_k_excluding", "inputs": {"history": [[1], [2]], '
                         b'"exclude_item_ids": [[1]]}}', 400, "batch size mismatch"),
    ("POST", ":predict", b'{"signature_name": "nope", "instances": [[1]]}', 400,
     'Serving signature name: "nope" not found'),
    ("POST", ":predict", json.dumps({"instances": [[1]] * (MAX_BATCH + 1)}).encode(), 400,
     f"larger than the server's maximum batch size {MAX_BATCH}"),
    ("POST", ":predict", b'{"instances": [[[1]]]}', 400, "must have rank 2"),
    ("POST", "/versions/7:predict", b'{"instances": [[1]]}', 404, "Servable not found for request: Specific(recs, 7)"),
    ("GET", "/versions/7", None, 404, "Could not find version 7 of model recs"),
    ("POST", "/labels/canary:predict", b'{"instances": [[1]]}', 404, "Unrecognized servable version label: canary"),
    ("POST", ":classify", b'{"instances": [[1]]}', 400, "not supported"),
    ("GET", ":predict", None, 404, "Malformed request"),
    ("GET", "/versions/abc", None, 404, "Malformed request"),
]


def test_bad_rest_requests_get_tf_serving_errors_and_the_server_keeps_serving(served):
    _, _, server = served
    root = f"http://127.0.0.1:{server.rest_port}/v1/models/recs"
    for method, suffix, body, status, message in BAD_REST:
        response = requests.request(method, root + suffix, data=body, timeout=10)
        assert response.status_code == status, (suffix, body, response.text)
        assert message in response.json()["error"], (suffix, response.json())
    other = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/other:predict", json={"instances": [[1]]},
                          timeout=TIMEOUT)
    assert other.status_code == 404 and "Servable not found for request: Latest(other)" in other.json()["error"]
    ok = requests.post(root + ":predict", json={"instances": [[1, 2]]}, timeout=10)
    assert ok.status_code == 200 and len(ok.json()["predictions"][0]["item_ids"]) == K


def grpc_request(signature="serving_default", version=None, name="recs", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_bad_grpc_requests_get_status_codes(served):
    _, _, server = served
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = [
        (grpc_request(history=np.array([["a"]], dtype=object)), grpc.StatusCode.INVALID_ARGUMENT, "expects int64"),
        (grpc_request(user_id=np.array([1])), grpc.StatusCode.INVALID_ARGUMENT, "input size does not match"),
        (grpc_request("nope", history=np.array([[1]])), grpc.StatusCode.INVALID_ARGUMENT, "not found in signature"),
        (grpc_request(version=9, history=np.array([[1]])), grpc.StatusCode.NOT_FOUND, "Specific(recs, 9)"),
        (grpc_request(name="x", history=np.array([[1]])), grpc.StatusCode.NOT_FOUND, "Latest(x)"),
        (grpc_request(history=np.ones((MAX_BATCH + 1, 2), np.int64)), grpc.StatusCode.INVALID_ARGUMENT,
         "maximum batch size"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=10)
        assert caught.value.code() == code and message in caught.value.details(), caught.value.details()
    response = stub.Predict(grpc_request(history=np.array([[1, 2]])), timeout=10)
    assert response.model_spec.version.value == 1 and tf.make_ndarray(response.outputs["item_ids"]).shape == (1, K)
    channel.close()


def _random_json(rng: random.Random, depth=0):
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return rng.randint(-2 ** 70, 2 ** 70)
    if choice == 1:
        return rng.random() * rng.choice([1, -1e30, 1e30])
    if choice == 2:
        return rng.choice(["", "history", "serving_default", "\u00e9\u0000", "b64"])
    if choice == 3:
        return rng.choice([None, True, False])
    if choice == 4:
        return {"b64": rng.choice(["AAE=", "%%", 7])}
    if choice == 5:
        return []
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if choice == 7:
        return [[rng.randint(-5, 4000) for _ in range(rng.randrange(1, 4))] for _ in range(rng.randrange(1, 4))]
    keys = ["instances", "inputs", "signature_name", "history", "exclude_item_ids", "user_id", "x"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(1, 4))}


def _mutated_body(rng: random.Random) -> bytes:
    valid = json.dumps({"signature_name": rng.choice(["serving_default", "top_k_excluding"]),
                        "instances": [[rng.randint(-3, 4000) for _ in range(3)] for _ in range(2)]}).encode()
    kind = rng.randrange(6)
    if kind == 5:  # some valid requests among the broken ones
        return valid
    if kind == 0:
        return valid[:rng.randrange(len(valid))]
    if kind == 1:
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return json.dumps(_random_json(rng)).encode()


def test_fuzzed_requests_never_crash_the_server(served):
    kind, _, server = served
    if kind == "scann":
        pytest.skip("the request handling is the same for both indexes; fuzzed once, on brute force")
    rng = random.Random(0)
    session = requests.Session()
    root = f"http://127.0.0.1:{server.rest_port}/v1/models/"
    paths = ["recs:predict", "recs/versions/1:predict", "recs", "recs/metadata", "recs/versions/-1:predict",
             "recs/labels/%00:predict", "recs:predict/extra", "", "recs/versions/99999999999999999999:predict"]
    statuses = set()
    for _ in range(1000):
        path = rng.choice(paths) if rng.random() < 0.3 else "recs:predict"
        response = session.post(root + path, data=_mutated_body(rng), timeout=10)
        statuses.add(response.status_code)
        assert response.status_code in (200, 400, 404), (path, response.status_code, response.text)
        body = response.json()
        assert ("error" in body) == (response.status_code != 200)
    assert statuses == {200, 400, 404}, statuses
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(200):
        request = grpc_request(rng.choice(["serving_default", "top_k_excluding", "x"]))
        for name in rng.sample(["history", "exclude_item_ids", "user_id"], rng.randrange(3)):
            value = rng.choice([np.array([[1, 2]]), np.array([["a"]], dtype=object), np.zeros((0, 3), np.int64),
                                np.array(1.5), np.ones((2, 2, 2), np.float32)])
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            stub.Predict(request, timeout=10)
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), error.details()
    channel.close()
    assert session.post(root + "recs:predict", json={"instances": [[1, 2]]}, timeout=10).status_code == 200


def test_a_new_version_is_served_within_seconds_and_staging_dirs_are_never_loaded(history_run, tmp_path):
    base = tmp_path / "model"
    export_run(history_run, base, k=K)
    with ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0.2) as server, \
            client_for(server) as client:
        assert [s["version"] for s in client.status()] == ["1"]
        staging = base / ".staging-5-999999"  # what a killed export leaves: never a version
        shutil.copytree(base / "1", staging)
        published = time.monotonic()
        export_run(history_run, base, k=5, index="brute_force")
        while [s["version"] for s in client.status()] != ["2"]:
            assert time.monotonic() - published < 30, client.status()
            time.sleep(0.1)
        assert len(client.recommend(histories=[[1, 2]])[0]["item_ids"]) == 5  # version 2 answers (k=5)
        with pytest.raises(ServingError, match="Specific\\(recs, 1\\)"):  # version 1 is unloaded now
            client_for(server, version=1).recommend(histories=[[1]])


def test_client_retries_then_reports_an_unreachable_server():
    client = Client(model="recs", rest_port=1, grpc_port=1, retries=2, backoff=0.01, timeout=2)
    started = time.monotonic()
    for protocol in ("rest", "grpc"):
        with pytest.raises(ServingError) as caught:
            client.recommend(histories=[[1]], protocol=protocol)
        assert caught.value.code == "UNAVAILABLE"
    assert time.monotonic() - started < 30


def test_tfsoft_serve_command_serves_until_terminated(history_run, tmp_path):
    base = tmp_path / "model"
    export_run(history_run, base, k=K)
    process = subprocess.Popen([sys.executable, "-m", "tfsoft.cli", "serve", "--export-dir", str(base),
                                "--model-name", "recs", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(process.stdout, timeout=120)  # the server loads TensorFlow and the model first
        match = re.search(r"REST on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        with Client(model="recs", rest_port=int(match.group(1)), timeout=TIMEOUT) as client:
            assert client.status()[0]["version"] == "1"
            assert len(client.recommend(histories=[[1, 2, 3]])[0]["item_ids"]) == K
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            raise AssertionError("tfsoft serve did not stop within 30 s of SIGTERM") from None
    assert code == 0
