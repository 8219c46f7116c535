"""TF Serving REST JSON decoding/encoding against hand-written expectations."""

import numpy as np
import pytest

from tfsoft.backend import tf
from tfsoft.serving.json_codec import decode_inputs, encode_outputs, parse_body, request_format
from tfsoft.serving.loaded_model import InputSpec
from tfsoft.serving.status import ServingError

ONE = {"history": InputSpec("history", tf.int64, (None, None))}
TWO = {"user_id": InputSpec("user_id", tf.string, (None,)), "history": InputSpec("history", tf.int64, (None, None))}


def test_row_and_columnar_requests_decode_to_the_same_batches():
    rows = decode_inputs({"instances": [{"user_id": "a", "history": [1, 2]}, {"user_id": {"b64": "Yg=="},
                                                                               "history": [3, 4]}]}, TWO)
    columns = decode_inputs({"inputs": {"user_id": ["a", "b"], "history": [[1, 2], [3, 4]]}}, TWO)
    for decoded in (rows, columns):
        assert decoded["user_id"].tolist() == [b"a", b"b"]
        np.testing.assert_array_equal(decoded["history"], [[1, 2], [3, 4]])
        assert decoded["history"].dtype == np.int64
    bare = decode_inputs({"instances": [[1, 2], [3, 4]]}, ONE)  # one input: bare values allowed
    np.testing.assert_array_equal(bare["history"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(decode_inputs({"inputs": [[5]]}, ONE)["history"], [[5]])


@pytest.mark.parametrize("payload, message", [
    ({"instances": [[1]], "inputs": [[1]]}, "Not both of 'instances' and 'inputs'"),
    ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, "'instances' is empty"),
    ({"instances": {"history": [1]}}, "'instances' must be a list"),
    ({"instances": [[1, 2], [3]]}, "Expecting tensor size to be consistent"),
    ({"instances": [[1, "2"]]}, 'JSON Value: "2" Type: String is not of expected type: int64'),
    ({"instances": [[1.5]]}, "JSON Value: 1.5 Type: Double is not of expected type: int64"),
    ({"instances": [[True]]}, "JSON Value: true Type: Bool is not of expected type: int64"),
    ({"instances": [[2 ** 70]]}, "does not fit in int64"),
    ({"inputs": {"history": [[1]], "extra": [1]}}, "expected inputs \\['history'\\], got \\['extra', 'history'\\]"),
    ({"instances": [[1]], "signature": "x"}, "Unknown request keys \\['signature'\\]"),
    ({"instances": [[1]], "signature_name": 3}, "'signature_name' must be a string"),
])
def test_malformed_requests_name_the_problem(payload, message):
    with pytest.raises(ServingError, match=message) as caught:
        decode_inputs(payload, ONE)
    assert caught.value.code == "INVALID_ARGUMENT" and caught.value.http_status == 400


def test_string_inputs_refuse_numbers_and_bad_base64():
    with pytest.raises(ServingError, match="JSON Value: 7 Type: Int is not of expected type: string"):
        decode_inputs({"inputs": {"user_id": [7], "history": [[1]]}}, TWO)
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        decode_inputs({"inputs": {"user_id": [{"b64": "!!"}], "history": [[1]]}}, TWO)
    with pytest.raises(ServingError, match="each instance must be an object with those keys"):
        decode_inputs({"instances": [[1]]}, TWO)
    with pytest.raises(ServingError, match="expected inputs \\['history', 'user_id'\\], got \\['history'\\]"):
        decode_inputs({"instances": [{"history": [1]}]}, TWO)


def test_body_parsing_and_response_shapes():
    with pytest.raises(ServingError, match="JSON Parse error"):
        parse_body(b"{nope")
    with pytest.raises(ServingError, match="JSON Parse error"):
        parse_body(b"\xff\xfe")
    with pytest.raises(ServingError, match="Is not of expected type: object"):
        parse_body(b"[1]")
    assert request_format({"inputs": 1}) == "columnar"
    outputs = {"item_ids": np.array([[b"x", b"y"], [b"z", b"w"]], dtype=object),
               "scores": np.array([[0.5, 0.25], [1.0, 0.0]], np.float32)}
    assert encode_outputs(outputs, "row") == {"predictions": [{"item_ids": ["x", "y"], "scores": [0.5, 0.25]},
                                                              {"item_ids": ["z", "w"], "scores": [1.0, 0.0]}]}
    assert encode_outputs(outputs, "columnar") == {"outputs": {"item_ids": [["x", "y"], ["z", "w"]],
                                                               "scores": [[0.5, 0.25], [1.0, 0.0]]}}
    assert encode_outputs({"key_bytes": np.array([b"\x00\x01"], dtype=object)}, "row") == \
        {"predictions": [{"b64": "AAE="}]}


def _deep(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [3, 65, 100, 300, 900])
def test_lists_nested_deeper_than_the_input_rank_are_refused_before_recursing(depth):
    for payload, specs, where in (({"instances": _deep(depth)}, ONE, "'instances' input 'history'"),
                                  ({"inputs": {"history": _deep(depth)}}, ONE, "'inputs' input 'history'"),
                                  ({"instances": [{"user_id": "a", "history": _deep(depth)}]}, TWO,
                                   "'instances' input 'history'")):
        with pytest.raises(ServingError, match=f"{where} must have rank 2 \\(shape \\[\\?, \\?\\]\\); got lists "
                                               f"nested more than 2 levels deep"):
            decode_inputs(payload, specs)


def test_bodies_too_deep_for_the_json_decoder_are_a_parse_error():
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"instances": ' + b"[" * 100_000 + b"1" + b"]" * 100_000 + b"}"):
        with pytest.raises(ServingError, match="JSON Parse error: the document is nested too deeply") as caught:
            parse_body(body)
        assert caught.value.http_status == 400
    deep = _deep(5000)  # built in Python: deeper than json.dumps can write, where an error message quotes it
    with pytest.raises(ServingError, match="'signature_name' must be a string; got <Array nested too deeply to show>"):
        request_format({"instances": [[1]], "signature_name": deep})


def test_integer_inputs_outside_the_signature_dtype_are_refused_not_wrapped():
    """A uint64 2**64-1 sent to an int64 input used to wrap to -1 silently."""
    from tfsoft.serving.loaded_model import _check_dtype

    spec = InputSpec(name="user", dtype=tf.int64, shape=(None,))
    _check_dtype("user", np.array([1, 2], np.uint64), spec)  # in range: accepted
    with pytest.raises(ServingError, match=r"outside its range"):
        _check_dtype("user", np.array([2 ** 64 - 1], np.uint64), spec)
