"""TF Serving's REST JSON <-> NumPy, for the predict API.

Requests (https://www.tensorflow.org/tfx/serving/api_rest):

* row format ``{"signature_name": ..., "instances": [...]}``: one entry per example; with
  several inputs each entry is an object ``{input: value}``, with one input it may also be the
  bare value. Entries are stacked into a batch, so they must have equal shapes.
* columnar format ``{"signature_name": ..., "inputs": {input: batch}}`` (or the bare batch
  for a one-input signature).

Strings are JSON strings, or ``{"b64": "..."}`` for binary values. Responses mirror the
request: ``{"predictions": [...]}`` for rows, ``{"outputs": {...}}`` for columns; string
outputs whose name ends in ``_bytes`` are base64-encoded as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

import numpy as np

from tfsoft.serving.loaded_model import InputSpec, _shape_text
from tfsoft.serving.status import invalid


def parse_body(body: bytes) -> dict:
    """The request object of a predict body; raises INVALID_ARGUMENT for malformed JSON.

    A body nested so deeply that Python's decoder gives up (``RecursionError``, some
    hundreds of levels) is malformed too: no tensor has that many dimensions, and so is a
    number with more digits than Python converts (``ValueError``, past 4300 digits).
    """
    try:
        payload = json.loads(body)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, int() past sys.get_int_max_str_digits()
        raise invalid(f"JSON Parse error: {error}") from None
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply (arrays or objects within each other "
                      "hundreds of levels deep); a tensor needs one level per dimension") from None
    if not isinstance(payload, dict):
        raise invalid(f"JSON Value: {_short(payload)} Is not of expected type: object")
    return payload


def request_format(payload: Mapping) -> str:
    """``row`` or ``columnar``; exactly one of ``instances`` / ``inputs`` must be present."""
    has_rows, has_columns = "instances" in payload, "inputs" in payload
    if has_rows and has_columns:
        raise invalid("Not both of 'instances' and 'inputs' can be specified in the request")
    if not (has_rows or has_columns):
        raise invalid("Missing 'inputs' or 'instances' key")
    unknown = sorted(set(payload) - {"instances", "inputs", "signature_name"})
    if unknown:
        raise invalid(f"Unknown request keys {unknown}; expected 'signature_name' and 'instances' or 'inputs'")
    signature = payload.get("signature_name", "serving_default")
    if not isinstance(signature, str):
        raise invalid(f"'signature_name' must be a string; got {_short(signature)}")
    return "row" if has_rows else "columnar"


def decode_inputs(payload: Mapping, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    """Inputs of a predict request (either format) as arrays of the signature's dtypes."""
    if request_format(payload) == "row":
        return _decode_rows(payload["instances"], specs)
    return _decode_columns(payload["inputs"], specs)


def _decode_rows(instances: Any, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid(f"'instances' must be a list; got {_short(instances)}")
    if not instances:
        raise invalid("'instances' is empty: the request holds no examples")
    names = sorted(specs)
    columns: dict[str, list] = {name: [] for name in names}
    for row, instance in enumerate(instances):
        if isinstance(instance, dict) and not _is_b64(instance):
            keys = sorted(instance)
            if keys != names:
                raise invalid(f"Failed to process element: {row} of 'instances' list. Error: expected inputs "
                              f"{names}, got {keys}")
            for name in names:
                columns[name].append(instance[name])
        elif len(names) == 1:
            columns[names[0]].append(instance)
        else:
            raise invalid(f"Failed to process element: {row} of 'instances' list. Error: the signature has "
                          f"inputs {names}; each instance must be an object with those keys")
    return {name: to_array(columns[name], specs[name], f"'instances' input '{name}'") for name in names}


def _decode_columns(inputs: Any, specs: Mapping[str, InputSpec]) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(names) != 1:
            raise invalid(f"'inputs' must be an object with keys {names}; got {_short(inputs)}")
        inputs = {names[0]: inputs}
    if sorted(inputs) != names:
        raise invalid(f"input size does not match signature: expected inputs {names}, got {sorted(inputs)}")
    return {name: to_array(inputs[name], specs[name], f"'inputs' input '{name}'") for name in names}


def to_array(value: Any, spec: InputSpec, where: str) -> np.ndarray:
    """A nested JSON list -> a rectangular array of ``spec``'s dtype (errors name ``where``).

    Lists nested deeper than the input's rank are refused before anything recurses into them,
    so a hostile body (``[[[[...]]]]``) costs one bounded walk and gets a 400.
    """
    shape = _shape(value, where, spec)
    flat = list(_flatten(value))
    kind = spec.dtype.name
    if kind == "string":
        items = []
        for item in flat:
            if isinstance(item, str):
                try:
                    items.append(item.encode("utf-8"))
                except UnicodeEncodeError:  # "\ud800" in the JSON: an unpaired surrogate is not text
                    raise invalid(f"{where}: JSON Value: {_short(item)} is not a valid Unicode string (it holds "
                                  "an unpaired surrogate)") from None
            elif isinstance(item, dict) and _is_b64(item):
                items.append(_b64decode(item["b64"], where))
            else:
                raise invalid(f"{where}: JSON Value: {_short(item)} Type: {_json_type(item)} is not of expected "
                              f"type: string")
        array = np.empty(len(items), dtype=object)
        array[:] = items
    else:
        for item in flat:
            ok = (isinstance(item, int) and not isinstance(item, bool)) if spec.dtype.is_integer else \
                (isinstance(item, (int, float)) and not isinstance(item, bool)) if spec.dtype.is_floating else \
                isinstance(item, bool)
            if not ok:
                raise invalid(f"{where}: JSON Value: {_short(item)} Type: {_json_type(item)} is not of expected "
                              f"type: {kind}")
        try:
            array = np.asarray(flat, dtype=spec.dtype.as_numpy_dtype)
        except OverflowError:
            raise invalid(f"{where}: a value does not fit in {kind}") from None
    return array.reshape(shape)


def _shape(value: Any, where: str, spec: InputSpec, depth: int = 0) -> tuple:
    if not isinstance(value, list):
        return ()
    if depth >= spec.rank:
        raise invalid(f"{where} must have rank {spec.rank} (shape {_shape_text(spec.shape)}); "
                      f"got lists nested more than {spec.rank} levels deep")
    if not value:
        return (0,)
    shapes = {_shape(item, where, spec, depth + 1) for item in value}
    if len(shapes) != 1:
        raise invalid(f"{where}: Expecting tensor size to be consistent; the lists have different lengths "
                      f"{sorted(shapes, key=str)} (pad them to one length)")
    return (len(value), *shapes.pop())


def _flatten(value: Any):
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


def encode_outputs(outputs: Mapping[str, np.ndarray], request_kind: str) -> dict:
    """A predict response: ``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar)."""
    converted = {name: _to_json(name, value) for name, value in outputs.items()}
    if request_kind == "columnar":
        return {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
    batch = len(next(iter(converted.values()))) if converted else 0
    if len(converted) == 1:
        return {"predictions": next(iter(converted.values()))}
    return {"predictions": [{name: column[i] for name, column in converted.items()} for i in range(batch)]}


def _to_json(name: str, value: np.ndarray):
    if value.dtype.kind in "OSU":
        binary = name.endswith("_bytes")

        def convert(item):
            if isinstance(item, bytes):
                if binary:
                    return {"b64": base64.b64encode(item).decode("ascii")}
                return item.decode("utf-8", errors="replace")
            return str(item)

        return np.vectorize(convert, otypes=[object])(value).tolist() if value.size else value.tolist()
    return value.tolist()


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == ["b64"]


def _b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise invalid(f"{where}: 'b64' must hold a base64 string; got {_short(text)}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}: Unable to base64 decode {_short(text)}") from None


def _json_type(value: Any) -> str:
    return {bool: "Bool", int: "Int", float: "Double", str: "String", dict: "Object", list: "Array",
            type(None): "Null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    except (RecursionError, ValueError):  # a value nested hundreds of levels deep
        return f"<{_json_type(value)} nested too deeply to show>"
    return text if len(text) <= 60 else text[:57] + "..."
