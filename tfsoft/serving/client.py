"""Clients for TF Serving (and ``tfsoft serve``): REST and gRPC, with timeouts and retries.

    >>> client = Client("127.0.0.1", model="tfsoft", rest_port=8501, grpc_port=8500)  # doctest: +SKIP
    >>> client.recommend(histories=[[12, 7, 99]])[0]["item_ids"][:5]                  # doctest: +SKIP

REST uses a ``requests`` session whose urllib3 ``Retry`` retries refused connections and
502/503/504 answers with exponential backoff (predict is idempotent, so POST is retried);
gRPC retries ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` the same way. Refusals (400/404,
``INVALID_ARGUMENT``/``NOT_FOUND``) are raised at once as :class:`ServingError` carrying the
server's message.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tfsoft.serving.status import HTTP_STATUS, ServingError

_HTTP_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED",
               429: "RESOURCE_EXHAUSTED", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_RETRIED_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def pad_rows(rows: Sequence[Sequence], pad: Any = None) -> np.ndarray:
    """Ragged rows of raw ids -> a rectangular array, right-padded with an id outside the
    vocabulary (``-1`` for integer ids, ``""`` for strings: the export ignores unknown ids)."""
    rows = [list(row) for row in rows]
    is_text = any(isinstance(item, (str, bytes)) for row in rows for item in row)
    if pad is None:
        pad = "" if is_text else -1
    width = max([len(row) for row in rows] + [1])
    out = np.full((len(rows), width), pad, dtype=object if is_text else np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def ids_array(values: Sequence) -> np.ndarray:
    """Raw ids -> an int64 array, or an object array when any id is a string."""
    values = list(values)
    is_text = any(isinstance(item, (str, bytes)) for item in values)
    return np.asarray(values, dtype=object if is_text else np.int64)


def _text(value: np.ndarray) -> np.ndarray:
    if value.dtype.kind in "OS":
        return np.vectorize(lambda item: item.decode("utf-8") if isinstance(item, bytes) else item,
                            otypes=[object])(value) if value.size else value.astype(object)
    return value


class Client:
    """A client of one model behind TF Serving's REST and/or gRPC APIs.

    Args:
        host: server host.
        model: model name.
        rest_port: REST port (``None`` = REST unused).
        grpc_port: gRPC port (``None`` = gRPC unused).
        version, label: pin a version or a version label (default: the newest).
        protocol: default protocol of :meth:`predict`, ``rest`` or ``grpc``.
        timeout: seconds per attempt.
        retries: extra attempts for connection failures and unavailable servers.
        backoff: first retry delay in seconds (doubles each retry).
    """

    def __init__(self, host: str = "127.0.0.1", *, model: str = "tfsoft", rest_port: Optional[int] = 8501,
                 grpc_port: Optional[int] = None, version: Optional[int] = None, label: Optional[str] = None,
                 protocol: str = "rest", timeout: float = 10.0, retries: int = 3, backoff: float = 0.2):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if protocol not in ("rest", "grpc"):
            raise ValueError(f"protocol must be 'rest' or 'grpc'; got {protocol!r}")
        self.host, self.model, self.rest_port, self.grpc_port = host, model, rest_port, grpc_port
        self.version, self.label, self.protocol = version, label, protocol
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._session = None
        self._channel = None

    # ------------------------------------------------------------------ REST
    @property
    def model_url(self) -> str:
        if self.rest_port is None:
            raise ValueError("this client has no rest_port")
        url = f"http://{self.host}:{self.rest_port}/v1/models/{self.model}"
        if self.version is not None:
            url += f"/versions/{self.version}"
        elif self.label is not None:
            url += f"/labels/{self.label}"
        return url

    def _http(self):
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            retry = Retry(total=self.retries, connect=self.retries, read=0, status=self.retries,
                          backoff_factor=self.backoff, status_forcelist=(502, 503, 504),
                          allowed_methods=frozenset({"GET", "POST"}), raise_on_status=False)
            self._session = requests.Session()
            self._session.mount("http://", HTTPAdapter(max_retries=retry))
        return self._session

    def _rest(self, method: str, url: str, payload: Optional[dict] = None) -> dict:
        import requests

        try:
            response = self._http().request(method, url, json=payload, timeout=self.timeout)
        except requests.exceptions.Timeout as error:
            raise ServingError("DEADLINE_EXCEEDED", f"{method} {url} timed out after {self.timeout}s") from error
        except requests.exceptions.ConnectionError as error:
            raise ServingError("UNAVAILABLE", f"cannot reach {url}: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code != 200:
            code = _HTTP_CODES.get(response.status_code, "INTERNAL")
            raise ServingError(code, f"HTTP {response.status_code}: {body.get('error', body)}")
        return body

    def status(self) -> list[dict]:
        """``model_version_status`` (REST)."""
        return self._rest("GET", self.model_url)["model_version_status"]

    def metadata(self) -> dict:
        """Signature definitions (REST ``/metadata``)."""
        return self._rest("GET", self.model_url + "/metadata")

    # ------------------------------------------------------------------ gRPC
    def _stub(self):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self.grpc_port is None:
            raise ValueError("this client has no grpc_port")
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}", options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024)])
        return prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _grpc_predict(self, inputs: Mapping[str, np.ndarray], signature: str) -> dict[str, np.ndarray]:
        import grpc
        from tensorflow_serving.apis import predict_pb2

        from tfsoft.backend import tf

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        elif self.label is not None:
            request.model_spec.version_label = self.label
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        stub = self._stub()
        for attempt in range(self.retries + 1):
            try:
                response = stub.Predict(request, timeout=self.timeout)
                return {name: _text(tf.make_ndarray(proto)) for name, proto in response.outputs.items()}
            except grpc.RpcError as error:
                code = error.code().name
                if code not in _RETRIED_GRPC or attempt == self.retries:
                    raise ServingError(code if code in HTTP_STATUS else "INTERNAL",
                                       f"gRPC {code}: {error.details()}") from None
                time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ predict
    def predict(self, inputs: Mapping[str, Any], *, signature: str = "serving_default", protocol: Optional[str] = None,
                format: str = "columnar") -> dict[str, np.ndarray]:
        """Run a signature; ``inputs`` maps input names to batches. Returns output name -> array.

        ``format`` (REST only): ``columnar`` sends ``{"inputs": ...}``, ``row`` sends ``{"instances": [...]}``."""
        protocol = protocol or self.protocol
        arrays = {name: value if isinstance(value, np.ndarray) else np.asarray(value) for name, value in inputs.items()}
        if protocol == "grpc":
            return self._grpc_predict(arrays, signature)
        if protocol != "rest":
            raise ValueError(f"protocol must be 'rest' or 'grpc'; got {protocol!r}")
        lists = {name: _text(value).tolist() for name, value in arrays.items()}
        if format == "columnar":
            payload = {"signature_name": signature, "inputs": lists}
        elif format == "row":
            batch = len(next(iter(lists.values())))
            payload = {"signature_name": signature,
                       "instances": [{name: column[i] for name, column in lists.items()} for i in range(batch)]}
        else:
            raise ValueError(f"format must be 'columnar' or 'row'; got {format!r}")
        body = self._rest("POST", self.model_url + ":predict", payload)
        if format == "columnar":
            outputs = body["outputs"]
            return {name: np.asarray(value) for name, value in outputs.items()}
        rows = body["predictions"]
        return {name: np.asarray([row[name] for row in rows]) for name in (rows[0] if rows else {})}

    def recommend(self, *, user_ids: Optional[Sequence] = None, histories: Optional[Sequence[Sequence]] = None,
                  exclude: Optional[Sequence[Sequence]] = None, k: Optional[int] = None,
                  protocol: Optional[str] = None, format: str = "columnar") -> list[dict]:
        """Top items per query: ``[{"item_ids": [...], "scores": [...]}, ...]``.

        Pass the inputs the export takes (``user_ids`` and/or ``histories``, ragged lists of raw
        ids are padded); ``exclude`` (ragged raw ids per query) uses ``top_k_excluding``.
        Padding slots (fewer than k items left) are dropped; ``k`` truncates."""
        inputs = {}
        if user_ids is not None:
            inputs["user_id"] = ids_array(user_ids)
        if histories is not None:
            inputs["history"] = pad_rows(histories)
        if not inputs:
            raise ValueError("give user_ids and/or histories")
        signature = "serving_default"
        if exclude is not None:
            inputs["exclude_item_ids"] = pad_rows(exclude)
            signature = "top_k_excluding"
        outputs = self.predict(inputs, signature=signature, protocol=protocol, format=format)
        lowest = float(np.finfo(np.float32).min)
        answers = []
        for items, scores in zip(outputs["item_ids"].tolist(), outputs["scores"].tolist()):
            kept = [(item, score) for item, score in zip(items, scores) if score > lowest][:k]
            answers.append({"item_ids": [item for item, _ in kept], "scores": [score for _, score in kept]})
        return answers

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
