"""Property-based fuzzing of the serving request decoders (Hypothesis).

Every request gets a result or TF Serving's INVALID_ARGUMENT (NOT_FOUND for an unknown model or
version): never another exception, never a 5xx.

* REST: :func:`parse_body` and :func:`decode_inputs` directly, on random bytes and random JSON
  (deeply nested, big, with lone surrogates and numbers past Python's 4300 digits), each error
  rendered by the REST layer as a 400 ``{"error": ...}``; then whole requests through the real
  ASGI app, in-process, on a tiny hand-written SavedModel;
* gRPC: ``PredictionService.Predict`` in-process (a stand-in context whose ``abort`` raises, as
  grpc's does) on random ``TensorProto`` inputs: dtype, shape, value fields, raw tensor content.

Bounded for CI: a fixed example count per test, ``derandomize=True`` (the same examples on every
run, no example database written into the checkout).
"""

import asyncio
import base64
import json
import math
import re
import tracemalloc

import grpc
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from tfsoft.backend import tf
from tfsoft.serving import rest
from tfsoft.serving.grpc_service import MAX_MESSAGE_BYTES, PredictionService
from tfsoft.serving.json_codec import decode_inputs, parse_body
from tfsoft.serving.loaded_model import InputSpec
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.status import ServingError

from tests.serving.test_server_robustness import _Tiny


def fuzz_settings(examples):
    # deadline: 5 s an example, for work of a few milliseconds (generous on a busy machine)
    return settings(max_examples=examples, deadline=5000, derandomize=True, database=None)


# ---- random JSON -----------------------------------------------------------------------------------------

KEYS = ["instances", "inputs", "signature_name", "history", "user_id", "weights", "b64", "x", ""]
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["history", "serving_default", "lookup", "AAE=", "%%", "\ud800", "a\udc00b", "\x00", "é"]),
)
JSON = st.recursive(LEAVES, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=4)
                    | children.map(lambda value: {"b64": value}), max_leaves=24)


def nested(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def rectangular(dtype_values, max_rank=3):
    """Mostly well-formed batches: nested lists of one shape."""
    return st.lists(st.integers(0, 4), min_size=0, max_size=max_rank).flatmap(
        lambda shape: _filled(shape, dtype_values))


def _filled(shape, values):
    if not shape:
        return values
    return st.lists(_filled(shape[1:], values), min_size=shape[0], max_size=shape[0])


B64 = st.binary(max_size=3).map(lambda data: {"b64": base64.b64encode(data).decode()})
VALUES = st.one_of(
    rectangular(st.integers(-5, 4000)), rectangular(st.floats(-10, 10)), rectangular(st.text(max_size=3)),
    rectangular(B64),
    st.integers(0, 2000).map(nested),  # deeper than any input's rank
    st.integers(0, 3000).map(lambda size: [[1] * size]),  # big, and fine
    JSON,
)


# the tiny served model's signatures (see _TwoSignatures), and a few more input kinds for the decoder alone
MODEL_SPECS = {
    "serving_default": {"history": InputSpec("history", tf.int64, (None, None))},
    "lookup": {"user_id": InputSpec("user_id", tf.string, (None,)),
               "weights": InputSpec("weights", tf.float32, (None, 2))},
}
SPECS = [
    *MODEL_SPECS.values(),
    {"user_id": InputSpec("user_id", tf.string, (None,)), "history": InputSpec("history", tf.int64, (None, None))},
    {"x": InputSpec("x", tf.bool, (None,))},
    {"x": InputSpec("x", tf.int32, (None, 3, None))},
    {"x": InputSpec("x", tf.uint8, (None,))},
]


def leaves_for(spec):
    if spec.dtype == tf.string:
        return st.text(max_size=3) | B64 | st.sampled_from(["\ud800", "a\udc00"])  # lone surrogates: not text
    if spec.dtype.is_bool:
        return st.booleans()
    if spec.dtype.is_integer:
        return st.integers(-5, 300)
    return st.floats(-10, 10) | st.integers(-5, 5)


@st.composite
def batch_for(draw, spec, rows):
    """A batch of ``rows`` examples of ``spec``'s rank and fixed dimensions, as nested JSON lists."""
    shape = [rows] + [size if size is not None else draw(st.integers(0, 3)) for size in spec.shape[1:]]
    return draw(_filled(shape, leaves_for(spec)))


@st.composite
def any_payloads(draw):
    """Request-shaped objects (row or columnar, any input names), sometimes arbitrary JSON."""
    if draw(st.integers(0, 5)) == 0:
        return draw(JSON)
    names = draw(st.lists(st.sampled_from(["history", "user_id", "weights", "x"]), unique=True, min_size=1,
                          max_size=3))
    payload = {}
    form = draw(st.sampled_from(["instances", "inputs", "inputs", "both", "neither"]))
    if form in ("instances", "both"):
        if draw(st.booleans()):
            payload["instances"] = draw(st.lists(st.fixed_dictionaries({name: VALUES for name in names}), max_size=3))
        else:
            payload["instances"] = draw(VALUES)
    if form in ("inputs", "both"):
        payload["inputs"] = draw(st.fixed_dictionaries({name: VALUES for name in names}) | VALUES)
    if draw(st.booleans()):
        payload["signature_name"] = draw(st.sampled_from(["serving_default", "lookup", "nope", "", "\ud800"]) | JSON)
    if draw(st.integers(0, 9)) == 0:
        payload[draw(st.sampled_from(KEYS))] = draw(JSON)
    return payload


@st.composite
def payloads(draw, specs, signature=None):
    """Mostly requests for ``specs`` (row or columnar, a value sometimes of the wrong type or shape), else any."""
    if draw(st.integers(0, 4)) == 0:
        return draw(any_payloads())
    rows = draw(st.integers(0, 4))  # 0: a request without examples
    batches = {name: draw(batch_for(spec, rows)) if draw(st.integers(0, 7)) else draw(VALUES)
               for name, spec in specs.items()}
    if draw(st.booleans()) and all(isinstance(batch, list) and len(batch) == rows for batch in batches.values()):
        instances = [{name: batch[row] for name, batch in batches.items()} for row in range(rows)]
        if len(specs) == 1 and draw(st.booleans()):
            instances = [instance.popitem()[1] for instance in instances]  # bare values, one input
        payload = {"instances": instances}
    else:
        payload = {"inputs": batches if len(specs) > 1 or draw(st.booleans()) else next(iter(batches.values()))}
    if signature is not None and (signature != "serving_default" or draw(st.booleans())):
        payload["signature_name"] = draw(st.sampled_from([signature] * 6 + ["nope", "\ud800"]))
    return payload


def dumps(payload, ascii_only):
    """JSON bytes; with non-ASCII characters written raw, lone surrogates too (as json.loads accepts them)."""
    text = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw, signature="serving_default"):
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:  # a valid body, cut or with bytes overwritten
        data = bytearray(dumps(draw(payloads(MODEL_SPECS[signature], signature)), True))
        if data and draw(st.booleans()):
            return bytes(data[:draw(st.integers(0, len(data) - 1))])
        for _ in range(draw(st.integers(1, 3))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == 2:
        depth = draw(st.sampled_from([10, 65, 900, 3000, 100_000]))
        return draw(st.sampled_from([b"[" * depth + b"]" * depth, b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth
                                     + b"}", b'{"inputs": ' + b"[" * depth]))
    if kind == 3:  # numbers past Python's int-from-text limit (4300 digits), or merely big
        digits = draw(st.sampled_from([20, 400, 4300, 4301, 10_000]))
        return b'{"instances": [[' + b"7" * digits + b']]}'
    return dumps(draw(payloads(MODEL_SPECS[signature], signature)), draw(st.booleans()))


# ---- REST decoding, directly -----------------------------------------------------------------------------

def outline(message):
    """The start of an error message, numbers and quoted names blurred: one Hypothesis event per kind."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|[0-9]+", "_", message)[:50]


def refused(error):
    """A decoder's ServingError: INVALID_ARGUMENT, which the REST layer renders as a 400 JSON error."""
    assert isinstance(error, ServingError) and error.code == "INVALID_ARGUMENT", error
    event("INVALID_ARGUMENT: " + outline(error.message))
    response = rest._error(error)
    assert response.status_code == 400 and response.media_type == "application/json"
    assert isinstance(json.loads(response.body)["error"], str)


@fuzz_settings(150)
@given(st.sampled_from(sorted(MODEL_SPECS)).flatmap(bodies))
def test_parse_body_gives_an_object_or_invalid_argument(body):
    try:
        payload = parse_body(body)
    except ServingError as error:
        refused(error)
        return
    assert isinstance(payload, dict)
    event("object")


@fuzz_settings(150)
@given(st.data(), st.sampled_from(range(len(SPECS))))
def test_decode_inputs_gives_arrays_of_the_signature_or_invalid_argument(data, which):
    specs = SPECS[which]
    payload = data.draw(payloads(specs))
    if not isinstance(payload, dict):  # parse_body hands on objects only
        payload = {"inputs": payload}
    try:
        arrays = decode_inputs(payload, specs)
    except ServingError as error:
        refused(error)
        return
    event("arrays")
    assert sorted(arrays) == sorted(specs)
    for name, array in arrays.items():
        spec = specs[name]
        assert isinstance(array, np.ndarray) and array.ndim <= spec.rank, (name, array.shape)
        if spec.dtype == tf.string:
            assert array.dtype == object and all(isinstance(item, bytes) for item in array.flat)
        else:
            assert array.dtype == spec.dtype.as_numpy_dtype, (name, array.dtype)


# ---- a tiny served model: REST through the ASGI app, gRPC through the servicer ---------------------------

class _TwoSignatures(_Tiny):
    """``serving_default`` of :class:`_Tiny` (history int64 [batch, length]), and ``lookup``: user_id string
    [batch] and weights float32 [batch, 2] -> score float32, echo / echo_bytes string [batch]."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None, 2], tf.float32, name="weights")])
    def lookup(self, user_id, weights):
        score = tf.reduce_sum(weights, axis=1) + tf.cast(tf.strings.length(user_id), tf.float32)
        return {"score": score, "echo": user_id, "echo_bytes": user_id}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "model"
    module = _TwoSignatures()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve,
                                                             "lookup": module.lookup})
    repository = ModelRepository(base, "recs", poll_seconds=0, max_batch_size=64)
    assert repository.refresh() == [1]
    loaded = repository.get("recs")
    assert loaded.inputs == MODEL_SPECS
    # trace both signatures once, before any example is timed
    loaded.predict("serving_default", {"history": np.array([[1, 2]])})
    loaded.predict("lookup", {"user_id": np.array([b"a"], dtype=object), "weights": np.ones((1, 2), np.float32)})
    return repository


def asgi(app, method, path, body=b""):
    """(status, content type, body) of one request through the ASGI app, in-process."""
    messages = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "server": ("testserver", 80), "client": ("testclient", 1)}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(message for message in messages if message["type"] == "http.response.start")
    headers = dict(start["headers"])
    content = b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")
    return start["status"], headers.get(b"content-type", b"").decode(), content


PATHS = ["/v1/models/recs:predict"] * 6 + [
    "/v1/models/recs/versions/1:predict", "/v1/models/recs/versions/7:predict", "/v1/models/recs/labels/x:predict",
    "/v1/models/other:predict", "/v1/models/recs:classify", "/v1/models/recs/versions/99999999999999999999:predict"]


@fuzz_settings(60)
@given(st.sampled_from(sorted(MODEL_SPECS)).flatmap(bodies), st.sampled_from(PATHS))
def test_rest_predict_answers_200_or_a_json_4xx(repository, body, path):
    status, content_type, content = asgi(rest.make_app(repository), "POST", path, body)
    assert status in (200, 400, 404), (status, content[:300])
    assert content_type == "application/json", content[:300]
    answer = json.loads(content)
    event(f"{status} " + outline(answer.get("error", "")))
    assert ("error" in answer) == (status != 200) and (status != 200 or set(answer) <= {"predictions", "outputs"})


DTYPES = [types_pb2.DT_INT64, types_pb2.DT_INT32, types_pb2.DT_UINT64, types_pb2.DT_UINT8, types_pb2.DT_FLOAT,
          types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16, types_pb2.DT_STRING, types_pb2.DT_BOOL,
          types_pb2.DT_COMPLEX64, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE, types_pb2.DT_INVALID, 999]
DIMS = st.integers(-2, 4) | st.sampled_from([0, 65, 1025, 2 ** 27, 2 ** 40, 2 ** 62])  # past the batch limit too
NUMPY_VALUES = {np.int64: st.integers(-2 ** 63, 2 ** 63 - 1), np.int32: st.integers(-2 ** 31, 2 ** 31 - 1),
                np.uint64: st.integers(0, 2 ** 64 - 1), np.float32: st.floats(width=32), np.float64: st.floats(),
                np.bool_: st.booleans(), object: st.binary(max_size=4)}


@st.composite
def arrays_for(draw, spec, rows):
    """A tensor for ``spec`` as a client sends it: mostly its dtype and rank, sometimes another dtype or shape."""
    dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
    if draw(st.integers(0, 5)) == 0:
        dtype = draw(st.sampled_from(sorted(NUMPY_VALUES, key=str)))
    shape = [rows] + [size if size is not None else draw(st.integers(0, 3)) for size in spec.shape[1:]]
    if draw(st.integers(0, 9)) == 0:
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
    values = draw(st.lists(NUMPY_VALUES[dtype], min_size=math.prod(shape), max_size=math.prod(shape)))
    return tf.make_tensor_proto(np.array(values, dtype=dtype).reshape(shape))


@st.composite
def grpc_inputs(draw, signature):
    """The inputs of a predict request for ``signature``: usually its names, some tensors anything at all."""
    inputs = {}
    rows = draw(st.integers(1, 3)) if draw(st.integers(0, 9)) else draw(st.sampled_from([0, 65]))
    for name, spec in MODEL_SPECS.get(signature or "serving_default", MODEL_SPECS["serving_default"]).items():
        if draw(st.integers(0, 9)):  # else: a missing input
            inputs[name] = draw(arrays_for(spec, rows) if draw(st.integers(0, 3)) else tensor_protos())
    if draw(st.integers(0, 5)) == 0:
        inputs[draw(st.sampled_from(["history", "user_id", "weights", "x"]))] = draw(tensor_protos())
    return inputs


@st.composite
def tensor_protos(draw):
    proto = tensor_pb2.TensorProto(dtype=draw(st.sampled_from(DTYPES)))
    rank = draw(st.sampled_from([0, 1, 2, 2, 3, 70]))
    for size in draw(st.lists(DIMS, min_size=min(rank, 4), max_size=min(rank, 4))) + [1] * max(rank - 4, 0):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.integers(0, 9)) == 0
    field = draw(st.sampled_from(["int64_val", "int_val", "uint64_val", "float_val", "double_val", "string_val",
                                  "bool_val", "half_val", "tensor_content", None]))
    if field == "tensor_content":
        proto.tensor_content = draw(st.binary(max_size=40))
    elif field is not None:
        values = {"int64_val": st.integers(-2 ** 63, 2 ** 63 - 1), "int_val": st.integers(-2 ** 31, 2 ** 31 - 1),
                  "uint64_val": st.integers(0, 2 ** 64 - 1), "float_val": st.floats(width=32),
                  "double_val": st.floats(), "string_val": st.binary(max_size=4), "bool_val": st.booleans(),
                  "half_val": st.integers(0, 2 ** 16 - 1)}[field]
        getattr(proto, field).extend(draw(st.lists(values, max_size=6)))
    return proto


class _Aborted(Exception):
    pass


class _Context:
    """What Predict sees of a grpc.ServicerContext: abort raises, as grpc's does."""

    def abort(self, code, details):
        self.code, self.details = code, details
        raise _Aborted()


@fuzz_settings(100)
@given(st.sampled_from(["", "serving_default", "lookup", "lookup", "nope"]).flatmap(
           lambda signature: st.tuples(st.just(signature), grpc_inputs(signature))),
       st.sampled_from([None] * 7 + [1, 7]), st.sampled_from(["recs"] * 9 + ["other"]))
def test_grpc_predict_gives_a_response_or_invalid_argument(repository, request_inputs, version, name):
    signature, inputs = request_inputs
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    if version is not None:
        request.model_spec.version.value = version
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    context = _Context()
    try:
        response = PredictionService(repository).Predict(request, context)
    except _Aborted:
        expected = grpc.StatusCode.NOT_FOUND if name != "recs" or version == 7 else grpc.StatusCode.INVALID_ARGUMENT
        assert context.code == expected and isinstance(context.details, str) and context.details, context.details
        event(f"{context.code.name}: " + outline(context.details))
        return
    event("response")
    assert isinstance(response, predict_pb2.PredictResponse) and response.outputs


# ---- what the fuzzing found, pinned ---------------------------------------------------------------------

def test_fuzzed_requests_that_once_got_a_500_or_a_traceback(repository):
    app = rest.make_app(repository)
    url = "/v1/models/recs:predict"
    cases = [
        # a number past Python's 4300-digit limit: ValueError from json.loads -> 500 "internal error"
        (b'{"instances": [[' + b"7" * 4301 + b"]]}", "JSON Parse error: Exceeds the limit (4300 digits)"),
        # a signature name with a lone surrogate: the 400 could not be encoded as UTF-8 -> plain-text 500
        (b'{"instances": [[1]], "signature_name": "\\ud800"}', 'Serving signature name: "\\ud800" not found'),
        # a lone surrogate in a string input: UnicodeEncodeError -> 500 "internal error"
        (b'{"signature_name": "lookup", "instances": [{"user_id": "\\ud800", "weights": [1, 2]}]}',
         "'instances' input 'user_id': JSON Value: \"\\ud800\" is not a valid Unicode string"),
    ]
    for body, message in cases:
        status, content_type, content = asgi(app, "POST", url, body)
        assert (status, content_type) == (400, "application/json"), (body[:80], status, content[:200])
        assert json.loads(content)["error"].startswith(message), content[:200]
    ok = asgi(app, "POST", url, b'{"signature_name": "lookup", "inputs": {"user_id": [{"b64": "/w=="}], '
                                b'"weights": [[0.5, 0.5]]}}')
    assert ok[0] == 200 and json.loads(ok[2]) == {"outputs": {"score": [2.0], "echo": ["\ufffd"],
                                                              "echo_bytes": [{"b64": "/w=="}]}}

    # gRPC: make_ndarray repeats a proto's last value to fill its shape, so a 20-byte int64 proto of shape
    # [1024, 2**20] allocated 8 GiB before the batch limit refused it; now refused before anything is allocated
    # (checked here on shapes that cost at most 64 MiB where the check is missing)
    for dtype, dims in ((types_pb2.DT_BOOL, [1, MAX_MESSAGE_BYTES + 1]), (types_pb2.DT_INT64, [2 ** 62, 2 ** 62])):
        proto = tensor_pb2.TensorProto(dtype=dtype, bool_val=[True], int64_val=[1])
        for size in dims:
            proto.tensor_shape.dim.add(size=size)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "recs"
        request.inputs["history"].CopyFrom(proto)
        context = _Context()
        tracemalloc.start()
        try:
            with pytest.raises(_Aborted):
                PredictionService(repository).Predict(request, context)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert context.code == grpc.StatusCode.INVALID_ARGUMENT
        assert context.details.startswith(f"input 'history' has shape {dims}: "), context.details
        assert peak < 8 * 2 ** 20, peak
