"""TF Serving's gRPC API: ``PredictionService.Predict`` / ``GetModelMetadata`` and
``ModelService.GetModelStatus``, on grpcio with the ``tensorflow-serving-api`` stubs.

``Predict`` runs the model on :class:`~tfsoft.serving.limits.ModelCalls` threads and answers
``DEADLINE_EXCEEDED`` once the server's ``request_timeout`` or the client's deadline, the
shorter, has passed (TF Serving uses the client's deadline as the session run's timeout);
requests over ``max_history`` are refused in :meth:`LoadedVersion.predict` with
``INVALID_ARGUMENT``. Messages over :data:`MAX_MESSAGE_BYTES` are refused by gRPC itself
(``RESOURCE_EXHAUSTED``; TF Serving allows 2 GiB).
"""

from __future__ import annotations

import math
from concurrent import futures
from typing import Optional

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfsoft.backend import tf
from tfsoft.serving.limits import (DEFAULT_REQUEST_TIMEOUT_SECONDS, ModelCalls, positive_or_none, shared_calls,
                                   timed_out)
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.status import ServingError, invalid

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _spec(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    return model_spec.name, version, label


def _input_array(key: str, proto):
    """A request TensorProto as an array; INVALID_ARGUMENT if it is malformed or would expand past what one
    message can carry (``make_ndarray`` repeats the last value to fill the shape: a 20-byte proto of shape
    [1024, 2**20] would allocate 8 GiB)."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise invalid(f"input '{key}' is not a valid TensorProto: shape {dims} has a negative dimension")
    if math.prod(dims) > MAX_MESSAGE_BYTES:
        raise invalid(f"input '{key}' has shape {dims}: {math.prod(dims)} values, more than the {MAX_MESSAGE_BYTES} "
                      "a request can carry")
    try:
        return tf.make_ndarray(proto)
    except Exception as error:
        raise invalid(f"input '{key}' is not a valid TensorProto: {error}") from None


def _abort(context, error: ServingError):
    context.abort(error.grpc_code(), error.message)


def _deadline(context, request_timeout: Optional[float]):
    """(seconds to wait, the error to answer then): the server's limit or the client's deadline, the sooner."""
    time_remaining = getattr(context, "time_remaining", None)  # None when the client set no deadline
    client = time_remaining() if time_remaining is not None else None
    if client is not None and (request_timeout is None or client < request_timeout):
        return max(0.0, client), timed_out(max(0.0, client), flag_set=False)
    return request_timeout, None if request_timeout is None else timed_out(request_timeout)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Args: ``request_timeout`` seconds a Predict may take (0 or ``None``: the client's deadline only);
    ``calls``, worker threads for the model (``None``: the model runs in the gRPC thread, without a limit)."""

    def __init__(self, repository: ModelRepository, *, request_timeout: Optional[float] = None,
                 calls: Optional[ModelCalls] = None):
        self.repository = repository
        self.request_timeout = positive_or_none(request_timeout)
        self.calls = calls

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            name, version, label = _spec(request.model_spec)
            loaded = self.repository.get(name, version, label)
            signature = request.model_spec.signature_name or "serving_default"
            inputs = {key: _input_array(key, proto) for key, proto in request.inputs.items()}
            if self.calls is None:
                outputs = loaded.predict(signature, inputs)
            else:
                timeout, error = _deadline(context, self.request_timeout)
                outputs = self.calls.call(loaded.predict, signature, inputs, timeout=timeout, error=error)
        except ServingError as error:
            return _abort(context, error)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = loaded.version
        response.model_spec.signature_name = signature
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            name, version, label = _spec(request.model_spec)
            loaded = self.repository.get(name, version, label)
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise invalid(f"Metadata field(s) {fields} not supported; the only field is 'signature_def'")
        except ServingError as error:
            return _abort(context, error)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(loaded.signature_defs)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository: ModelRepository):
        self.repository = repository

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            name, version, label = _spec(request.model_spec)
            entries = self.repository.status(name, version, label)
        except ServingError as error:
            return _abort(context, error)
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in entries:
            status = response.model_version_status.add()
            status.version = int(entry["version"])
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
            codes = status.status.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
            status.status.error_code = codes[entry["status"]["error_code"]].number  # e.g. UNKNOWN for a failed load
            status.status.error_message = entry["status"]["error_message"]
        return response


def make_grpc_server(repository: ModelRepository, host: str, port: int, *, workers: int = 8,
                     request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT_SECONDS,
                     calls: Optional[ModelCalls] = None):
    """A started-ready grpc server bound to ``host:port`` (0 = any free port); returns (server, port).
    ``request_timeout`` and ``calls``: see :class:`PredictionService` (``calls=None``: the process's shared pool)."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"), options=options)
    service = PredictionService(repository, request_timeout=request_timeout, calls=calls or shared_calls())
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    return server, bound
