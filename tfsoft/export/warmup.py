"""TF Serving warmup requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays the ``PredictionLog`` records of this TFRecord file when it loads a
version, before the version becomes available, so the first real request does not pay for
graph initialisation, lookup-table loading or ScaNN's searcher construction (slow first
query: TFRS issue #325). ``tfsoft serve`` replays the same file. TF Serving reads at most
1,000 records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from tfsoft.backend import tf
from tfsoft.errors import ExportError

WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def predict_request(inputs: Mapping[str, np.ndarray], *, signature: str = "serving_default", model_name: str = ""):
    """A ``tensorflow.serving.PredictRequest`` carrying ``inputs`` (name -> array)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup_requests(path: str | Path, requests: Iterable) -> int:
    """Write PredictRequests as ``PredictionLog`` TFRecords; returns the number written.

    Raises:
        ExportError: more than :data:`MAX_WARMUP_RECORDS` requests, or none.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    requests = list(requests)
    if not requests or len(requests) > MAX_WARMUP_RECORDS:
        raise ExportError(f"warmup needs 1..{MAX_WARMUP_RECORDS} requests; got {len(requests)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(requests)


def read_warmup_requests(path: str | Path) -> list:
    """The PredictRequests of a warmup file (what a server replays)."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            requests.append(log.predict_log.request)
    return requests
