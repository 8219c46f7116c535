"""The limits of ``tfsoft serve`` (:mod:`tfsoft.serving.limits`), on a tiny hand-written SavedModel
that can be made slow on request (no training):

* a REST body over ``--max-body-bytes``: 413 JSON, for a declared ``Content-Length`` before any of
  the body is read, for a chunked body once it passes the limit (never read to its end);
* an instance over ``--max-history``: 400 / ``INVALID_ARGUMENT`` naming the input, its length, the limit;
* a request over ``--request-timeout-seconds``: 504 / ``DEADLINE_EXCEEDED``, while other requests
  are answered at once (the model runs off the event loop);
* SIGTERM to ``tfsoft serve``: no new connections, the request in flight answered 200, exit 0;
  the grace period bounds the wait.
"""

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from tensorflow.python.data.experimental.ops import testing as data_testing
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfsoft.backend import tf
from tfsoft.cli import build_parser
from tfsoft.errors import TfsoftError
from tfsoft.serving import limits, rest
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.server import ModelServer

from tests.serving.test_server import read_line
from tests.serving.test_server_robustness import TIMEOUT, wait_for

PREDICT = "/v1/models/recs:predict"


class _Slow(tf.Module):
    """``serving_default``: history int64 [batch, length] -> item_ids / scores [batch, 1] = the row sums.
    A negative first id in the first row is a delay: ``[[-1500, ...]]`` takes 1.5 s."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="history")])
    def serve(self, history):
        total = tf.reduce_sum(history, axis=1, keepdims=True)
        delay_ms = tf.maximum(-history[0, 0], 0)
        # SleepDataset sleeps on each GetNext, and get_single_element calls it twice
        total = tf.data.Dataset.from_tensors(total).apply(data_testing.sleep(delay_ms * 500)).get_single_element()
        return {"item_ids": total, "scores": tf.cast(total, tf.float32)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A model base path holding version 1 of :class:`_Slow`."""
    path = tmp_path_factory.mktemp("limits") / "model"
    module = _Slow()
    tf.saved_model.save(module, str(path / "1"), signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="module")
def repository(base):
    repository = ModelRepository(base, "recs", poll_seconds=0, max_history=5)
    repository.refresh()
    return repository


def asgi(app, headers, chunks, delay=0.0):
    """Drive ``app`` in process with a POST to :data:`PREDICT` whose body arrives as ``chunks`` (an
    iterator, possibly endless; each ``delay`` seconds after the last); returns (status, headers, JSON
    answer, the sizes of the chunks read)."""
    read = []
    messages = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": PREDICT, "raw_path": PREDICT.encode(), "query_string": b"", "root_path": "",
             "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
             "server": ("testserver", 80), "client": ("testclient", 1)}

    async def receive():
        await asyncio.sleep(delay)
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(message for message in messages if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body), read


def endless(chunk=b" " * 65536):
    while True:
        yield chunk


# --------------------------------------------------------------------------------------------- body size
def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_read(repository):
    app = rest.make_app(repository, max_body_bytes=1 << 20)
    status, headers, answer, read = asgi(app, {"content-length": str(10 ** 12)}, endless())
    assert status == 413 and read == [], (status, answer, len(read))
    assert headers[b"connection"] == b"close" and headers[b"content-type"] == b"application/json"
    assert answer["error"] == ("the request body of 1000000000000 bytes (Content-Length) is larger than the "
                               "server's limit of 1048576 bytes (--max-body-bytes); split the request")


def test_a_chunked_body_over_the_limit_is_413_once_it_passes_the_limit(repository):
    app = rest.make_app(repository, max_body_bytes=1 << 20)
    status, headers, answer, read = asgi(app, {"transfer-encoding": "chunked"}, endless())
    assert status == 413 and headers[b"connection"] == b"close", (status, answer)
    assert sum(read) == (1 << 20) + 65536, sum(read)  # read up to one chunk past the limit, then refused
    assert "larger than the server's limit of 1048576 bytes (--max-body-bytes)" in answer["error"], answer

    # exactly the limit is served (a JSON body padded with spaces)
    body = b'{"instances": [[1, 2]]}'
    body += b" " * ((1 << 20) - len(body))
    status, _, answer, _ = asgi(app, {"content-length": str(len(body))}, iter([body[:1000], body[1000:]]))
    assert (status, answer) == (200, {"predictions": [{"item_ids": [3], "scores": [3.0]}]})
    # 0 = no limit (and no timeout)
    unlimited = rest.make_app(repository, max_body_bytes=0, request_timeout=0)
    status, _, answer, _ = asgi(unlimited, {"content-length": str(len(body) + 1)}, iter([body + b" "]))
    assert (status, answer) == (200, {"predictions": [{"item_ids": [3], "scores": [3.0]}]})


def test_a_real_server_refuses_big_bodies_and_closes_the_connection(base):
    with ModelServer(base, "recs", rest_port=0, poll_seconds=0, max_body_bytes=1 << 20) as server:
        url = f"http://127.0.0.1:{server.rest_port}{PREDICT}"
        # declared, and the client waits for "100 Continue": answered before it sends any of the body; closed
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000000\r\n"
                         b"Expect: 100-continue\r\n\r\n" % PREDICT.encode())
            raw = b""
            while data := sock.recv(65536):  # until the server closes the connection
                raw += data
        head, _, content = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower(), raw[:300]
        error = json.loads(content)["error"]
        assert "50000000000 bytes (Content-Length)" in error and "--max-body-bytes" in error, error

        # chunked and endless: refused once past the limit, the rest never read (requests reads the early answer)
        sent = []

        def endless_body():
            while True:
                sent.append(65536)
                yield b" " * 65536

        response = requests.post(url, data=endless_body(), timeout=TIMEOUT)
        assert response.status_code == 413 and "(--max-body-bytes)" in response.json()["error"], response.text
        assert sum(sent) < 32 << 20, sum(sent)  # the socket buffers' worth, not more
        ok = requests.post(url, json={"inputs": [[1, 2]]}, timeout=TIMEOUT)
        assert ok.status_code == 200 and ok.json() == {"outputs": {"item_ids": [[3]], "scores": [[3.0]]}}


# ------------------------------------------------------------------------------------------ history length
def test_a_history_over_max_history_is_400_on_rest_and_invalid_argument_on_grpc(base):
    message = ("input 'history' has 6 ids per instance, more than the server's maximum history length of 5 "
               "(--max-history); send the newest 5")
    with ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0, max_history=5) as server:
        url = f"http://127.0.0.1:{server.rest_port}{PREDICT}"
        for payload in ({"instances": [[1] * 6, [2] * 6]}, {"inputs": {"history": [[1] * 6]}}):
            response = requests.post(url, json=payload, timeout=TIMEOUT)
            assert response.status_code == 400 and response.json() == {"error": message}, response.text
        at_limit = requests.post(url, json={"instances": [[1] * 5, [2] * 5]}, timeout=TIMEOUT)
        assert at_limit.status_code == 200 and at_limit.json()["predictions"][1]["item_ids"] == [10]

        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "recs"
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.ones((2, 6), np.int64)))
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == message
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.ones((2, 5), np.int64)))
            assert tf.make_ndarray(stub.Predict(request, timeout=TIMEOUT).outputs["item_ids"]).tolist() == [[5], [5]]


# ------------------------------------------------------------------------------------------------ timeout
def test_a_slow_request_times_out_with_504_while_others_are_answered(base):
    with ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0, request_timeout=1) as server:
        url = f"http://127.0.0.1:{server.rest_port}{PREDICT}"
        slow = {}

        def send_slow():
            started = time.monotonic()
            slow["response"] = requests.post(url, json={"instances": [[-4000, 1]]}, timeout=TIMEOUT)
            slow["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=send_slow)
        thread.start()
        time.sleep(0.2)
        fast = requests.post(url, json={"instances": [[1, 2]]}, timeout=TIMEOUT)
        assert "response" not in slow  # answered while the slow one is still running
        assert fast.status_code == 200 and fast.json()["predictions"] == [{"item_ids": [3], "scores": [3.0]}]
        thread.join(TIMEOUT)
        response = slow["response"]
        assert response.status_code == 504 and response.json() == {"error": (
            "the request was not answered within the server's limit of 1s (--request-timeout-seconds)")}
        assert 0.9 < slow["seconds"] < 3.5, slow["seconds"]  # at the deadline, not when the model is done (4 s)

        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "recs"
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.asarray([[-4000, 1]], np.int64)))
            with pytest.raises(grpc.RpcError) as timed_out:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
        assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert timed_out.value.details().endswith("within the server's limit of 1s (--request-timeout-seconds)")


def test_a_body_still_arriving_at_the_deadline_is_408(repository):
    app = rest.make_app(repository, request_timeout=0.3)
    started = time.monotonic()
    status, headers, answer, read = asgi(app, {"transfer-encoding": "chunked"}, endless(b" "), delay=0.05)
    assert time.monotonic() - started < 2 and 1 <= len(read) <= 7, (time.monotonic() - started, len(read))
    assert status == 408 and headers[b"connection"] == b"close", (status, answer)
    assert answer == {"error": "the request body did not arrive within the server's limit of 0.3s "
                               "(--request-timeout-seconds)"}


# ------------------------------------------------------------------------------------------------ shutdown
def test_sigterm_finishes_the_request_in_flight_then_exits_0(base):
    process = subprocess.Popen([sys.executable, "-m", "tfsoft.cli", "serve", "--export-dir", str(base),
                                "--model-name", "recs", "--port", "0", "--shutdown-grace-seconds", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(process.stdout, timeout=120)
        port = re.search(r"REST on http://127\.0\.0\.1:(\d+)", line)
        assert port, line
        url = f"http://127.0.0.1:{port.group(1)}{PREDICT}"
        answer = {}
        thread = threading.Thread(target=lambda: answer.update(response=requests.post(
            url, json={"instances": [[-3000, 1]]}, timeout=TIMEOUT)))
        thread.start()
        time.sleep(1)  # the request is in flight (it takes 3 s)
        process.send_signal(signal.SIGTERM)

        def refused():
            try:
                requests.post(url, json={"instances": [[1]]}, timeout=TIMEOUT)
            except requests.ConnectionError:
                return True
            return False

        wait_for(refused, "new connections to be refused")
        assert process.poll() is None  # still finishing the request in flight
        thread.join(TIMEOUT)
        response = answer["response"]
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [{"item_ids": [-2999], "scores": [-2999.0]}]}
        assert process.wait(timeout=TIMEOUT) == 0
        log = process.stderr.read()
        assert "SIGTERM: no new connections; finishing the requests in flight (up to 20s" in log, log[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_the_grace_period_bounds_the_wait_for_requests_in_flight(base):
    server = ModelServer(base, "recs", rest_port=0, grpc_port=0, poll_seconds=0, shutdown_grace=0.5).start()
    outcome = {}

    def rest_call():
        outcome["rest"] = requests.post(f"http://127.0.0.1:{server.rest_port}{PREDICT}",
                                        json={"instances": [[-4000, 1]]}, timeout=TIMEOUT)

    def grpc_call():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "recs"
        request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.asarray([[-4000, 1]], np.int64)))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
            except grpc.RpcError as error:
                outcome["grpc"] = error.code()

    threads = [threading.Thread(target=rest_call), threading.Thread(target=grpc_call)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # both in flight (they take 4 s)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.5  # not the 4 s the requests would take
    for thread in threads:
        thread.join(TIMEOUT)
    response = outcome["rest"]  # cut off: a JSON 503
    assert response.status_code == 503 and response.headers["connection"] == "close", response.text
    assert "--shutdown-grace-seconds" in response.json()["error"]
    assert outcome["grpc"] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), outcome


# --------------------------------------------------------------------------------------------------- flags
def test_serve_flags_and_their_defaults(base):
    args = build_parser().parse_args(["serve", "--export-dir", "x", "--model-name", "m"])
    assert (args.max_body_bytes, args.max_history, args.request_timeout_seconds, args.shutdown_grace_seconds) == (
        limits.DEFAULT_MAX_BODY_BYTES, limits.DEFAULT_MAX_HISTORY, limits.DEFAULT_REQUEST_TIMEOUT_SECONDS,
        limits.DEFAULT_SHUTDOWN_GRACE_SECONDS) == (16 * 1024 * 1024, 10_000, 30.0, 25.0)
    for keyword, flag in (("max_body_bytes", "--max-body-bytes"), ("max_history", "--max-history"),
                          ("request_timeout", "--request-timeout-seconds"),
                          ("shutdown_grace", "--shutdown-grace-seconds")):
        with pytest.raises(TfsoftError, match=f"{flag} must be >= 0"):
            ModelServer(base, "recs", **{keyword: -1})
