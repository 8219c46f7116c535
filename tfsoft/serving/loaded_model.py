"""One loaded version of an exported model: validated calls of its signatures.

:class:`LoadedVersion` loads a SavedModel (importing ScaNN first so its ops are registered),
reads the signature definitions, replays the version's warmup requests, and runs
:meth:`LoadedVersion.predict` after checking the request the way TF Serving does: the input
names must be exactly the signature's, the ranks must match, all inputs must share the batch
size, and the batch must not exceed the server's limit; nor may an instance's id list (every
``[batch, ?]`` input, e.g. ``history``) exceed ``max_history`` (``tfsoft serve --max-history``,
see :mod:`tfsoft.serving.limits`; TF Serving has no such limit).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from tfsoft.backend import tf
from tfsoft.serving.status import ServingError, invalid

log = logging.getLogger("tfsoft.serving")

PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True)
class InputSpec:
    """A signature input: name, numpy dtype kind (``int64``, ``float32``, ``string``, ...) and shape."""

    name: str
    dtype: tf.DType
    shape: tuple  # None for unknown dimensions

    @property
    def rank(self) -> int:
        return len(self.shape)


def _register_custom_ops() -> None:
    try:
        import scann.scann_ops.py.scann_ops  # noqa: F401  (registers Scann>* ops for ScaNN exports)
    except ImportError:  # pragma: no cover - scann is a dependency; brute-force exports do not need it
        log.warning("scann is not importable: ScaNN exports will not load")


def read_signature_defs(export_path: str | Path):
    """The ``SignatureDefMap`` proto of a SavedModel directory (for metadata answers)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(export_path) / "saved_model.pb").read_bytes())
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in saved.meta_graphs[0].signature_def.items():
        if name != "__saved_model_init_op":
            signature_map.signature_def[name].CopyFrom(definition)
    return signature_map


class LoadedVersion:
    """A SavedModel version ready to answer predict requests.

    Args:
        path: the version directory (``<base>/<version>``).
        version: its integer version.
        max_batch_size: largest batch a request may carry.
        max_history: longest id list per instance in a ``[batch, ?]`` input (``None`` or 0: no limit).
    """

    def __init__(self, path: str | Path, version: int, *, max_batch_size: int = 1024,
                 max_history: Optional[int] = None):
        _register_custom_ops()
        self.path, self.version, self.max_batch_size = Path(path), int(version), int(max_batch_size)
        self.max_history = int(max_history) if max_history else None
        started = time.perf_counter()
        self._model = tf.saved_model.load(str(self.path))
        self.signature_defs = read_signature_defs(self.path)
        self.inputs: dict[str, dict[str, InputSpec]] = {}
        for name, function in self._model.signatures.items():
            _, kwargs = function.structured_input_signature
            self.inputs[name] = {key: InputSpec(key, spec.dtype, tuple(spec.shape.as_list()))
                                 for key, spec in kwargs.items()}
        self.load_seconds = time.perf_counter() - started
        self.warmup_seconds = 0.0

    @property
    def signature_names(self) -> list[str]:
        return sorted(self.inputs)

    def input_specs(self, signature: str) -> dict[str, InputSpec]:
        """The inputs of ``signature``; raises the TF Serving error for an unknown name."""
        signature = signature or "serving_default"
        if signature not in self.inputs:
            raise invalid(f'Serving signature name: "{signature}" not found in signature def; '
                          f'available: {", ".join(self.signature_names)}')
        return self.inputs[signature]

    def predict(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``signature`` on validated ``inputs`` (name -> array); returns name -> array."""
        signature = signature or "serving_default"
        specs = self.input_specs(signature)
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise invalid(f"input size does not match signature: {len(inputs)}!={len(specs)} "
                          f"len({{{', '.join(sorted(inputs))}}}) != len({{{', '.join(sorted(specs))}}}); "
                          + (f"missing {missing} " if missing else "") + (f"unexpected {extra}" if extra else ""))
        batch = None
        feed = {}
        for name, spec in specs.items():
            value = inputs[name]
            _check_dtype(name, value, spec)
            if value.ndim != spec.rank:
                raise invalid(f"input '{name}' must have rank {spec.rank} (shape {_shape_text(spec.shape)}); "
                              f"got shape {list(value.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
                if want is not None and want != got:
                    raise invalid(f"input '{name}' dimension {axis} must be {want}; got {got}")
            if self.max_history and spec.rank == 2 and spec.shape[1] is None and value.shape[1] > self.max_history:
                raise invalid(f"input '{name}' has {value.shape[1]} ids per instance, more than the server's "
                              f"maximum history length of {self.max_history} (--max-history); send the newest "
                              f"{self.max_history}")
            if batch is None:
                batch = (name, value.shape[0])
            elif value.shape[0] != batch[1]:
                raise invalid(f"batch size mismatch: input '{batch[0]}' has {batch[1]} rows but '{name}' has "
                              f"{value.shape[0]}; all inputs must have the same batch size")
            feed[name] = tf.constant(value, dtype=spec.dtype)
        if batch is not None and batch[1] > self.max_batch_size:
            raise invalid(f"batch size {batch[1]} is larger than the server's maximum batch size "
                          f"{self.max_batch_size}; split the request")
        if batch is not None and batch[1] == 0:
            raise invalid("the request holds no instances (batch size 0)")
        try:
            outputs = self._model.signatures[signature](**feed)
        except tf.errors.InvalidArgumentError as error:
            raise invalid(error.message) from None
        except tf.errors.OpError as error:  # pragma: no cover - model bugs
            raise ServingError("INTERNAL", error.message) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def warmup(self, requests) -> int:
        """Replay warmup ``PredictRequest`` protos (as TF Serving does at load); returns how many ran."""
        started = time.perf_counter()
        done = 0
        for request in requests:
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            try:
                self.predict(request.model_spec.signature_name, inputs)
                done += 1
            except ServingError as error:
                log.warning("warmup request %d of version %d failed: %s", done, self.version, error)
        self.warmup_seconds = time.perf_counter() - started
        return done


def _check_dtype(name: str, value: np.ndarray, spec: InputSpec) -> None:
    kind = value.dtype.kind
    if spec.dtype == tf.string:
        ok = kind in "SUO" and (kind != "O" or all(isinstance(item, (bytes, str)) for item in value.flat))
    elif spec.dtype.is_integer:
        ok = kind in "iu"
        if ok and value.size and not np.can_cast(value.dtype, spec.dtype.as_numpy_dtype):
            info = np.iinfo(spec.dtype.as_numpy_dtype)
            if value.min() < info.min or value.max() > info.max:  # e.g. uint64 2**64-1 would wrap to -1
                raise invalid(f"input '{name}' expects {spec.dtype.name} values; got {value.dtype} values outside "
                              f"its range [{info.min}, {info.max}] (e.g. {value.max()!r})")
    elif spec.dtype.is_floating:
        ok = kind in "iuf"
    elif spec.dtype.is_bool:
        ok = kind == "b"
    else:  # pragma: no cover - our signatures use the kinds above
        ok = True
    if not ok:
        raise invalid(f"input '{name}' expects {spec.dtype.name} values; got {value.dtype} "
                      f"(e.g. {value.flat[0]!r})" if value.size else
                      f"input '{name}' expects {spec.dtype.name} values; got {value.dtype}")


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"
