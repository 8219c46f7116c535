"""TF Serving's REST API on Starlette (ASGI), served by uvicorn.

Endpoints (as in TF Serving; ``[...]`` = optional, newest version by default)::

    GET  /v1/models/NAME[/versions/V | /labels/L]             model status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata    signature definitions
    POST /v1/models/NAME[/versions/V | /labels/L]:predict     row or columnar predict

Errors are ``{"error": "..."}`` with TF Serving's HTTP status (400 for bad input, 404 for an
unknown model, version, label or URL). Limits (:mod:`tfsoft.serving.limits`): a body over
``max_body_bytes`` gets 413 (a declared ``Content-Length`` before the body is read, a chunked
body once it passes the limit), a request not answered within ``request_timeout`` 504 (408
while its body is still arriving), one still running when a shutdown's grace period ends 503;
all but the 504 close the connection. Model calls run on
:class:`~tfsoft.serving.limits.ModelCalls` threads, so slow requests do not block the event
loop. A request that breaks the server in an unforeseen way still gets a JSON error (500, or
400 for input nested too deeply to process) and costs one log line, not a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Optional

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tfsoft.serving.json_codec import decode_inputs, encode_outputs, parse_body, request_format
from tfsoft.serving.limits import (DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT_SECONDS, ModelCalls,
                                   positive_or_none, shared_calls, timed_out)
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.status import ServingError, invalid, not_found

log = logging.getLogger("tfsoft.serving")

_URL = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                  r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                  r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")


def _error(error: ServingError) -> JSONResponse:
    # the message may quote the request, e.g. a signature_name "\ud800" that UTF-8 cannot encode
    message = error.message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message}, status_code=error.http_status)


class _Refused(Exception):
    """An answer after which the connection is closed (the rest of a body is never read): 413 or 408 while
    the body arrives, 503 for a request cut off by the end of a shutdown's grace period."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.status, headers={"Connection": "close"})


async def read_body(request: Request, limit: Optional[int]) -> bytes:
    """The request body, refused (413) once it is known to be over ``limit`` bytes (``None`` = no limit):
    a declared ``Content-Length`` before anything is read, a chunked body as soon as it passes the limit."""
    declared = request.headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the request body of {int(declared)} bytes (Content-Length) is larger than the "
                            f"server's limit of {limit} bytes (--max-body-bytes); split the request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if limit is not None and size > limit:
            raise _Refused(413, f"the request body is larger than the server's limit of {limit} bytes "
                                f"(--max-body-bytes): refused after {size} bytes; split the request")
        chunks.append(chunk)
    return b"".join(chunks)


def _route(request: Request):
    match = _URL.match(request.url.path)
    if match is None:
        raise not_found(f"Malformed request: {request.method} {request.url.path}")
    version = match.group("version")
    if version is not None:
        if not version.isdigit():
            raise not_found(f"Malformed request: {request.method} {request.url.path} (version must be an integer)")
        version = int(version)
    return match, version


def _status(repository: ModelRepository, name, version, label) -> dict:
    return {"model_version_status": repository.status(name, version, label)}


def _metadata(repository: ModelRepository, name, version, label) -> dict:
    loaded = repository.get(name, version, label)
    signature_map = json_format.MessageToDict(loaded.signature_defs, preserving_proto_field_name=True)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
            "metadata": {"signature_def": signature_map}}


def _predict(repository: ModelRepository, name, version, label, body: bytes) -> dict:
    payload = parse_body(body)
    kind = request_format(payload)
    loaded = repository.get(name, version, label)
    signature = payload.get("signature_name") or "serving_default"
    inputs = decode_inputs(payload, loaded.input_specs(signature))
    return encode_outputs(loaded.predict(signature, inputs), kind)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def make_app(repository: ModelRepository, *, max_body_bytes: Optional[int] = DEFAULT_MAX_BODY_BYTES,
             request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT_SECONDS,
             calls: Optional[ModelCalls] = None) -> Starlette:
    """The ASGI application serving ``repository`` under TF Serving's REST paths.

    Args:
        repository: the model versions to serve.
        max_body_bytes: largest predict body (0 or ``None``: no limit).
        request_timeout: seconds from a request's arrival to its answer (0 or ``None``: no limit).
        calls: the worker threads model calls run on (default: one pool shared by the process).
    """
    max_body_bytes = positive_or_none(max_body_bytes)
    request_timeout = positive_or_none(request_timeout)
    timeout_error = timed_out(request_timeout) if request_timeout is not None else None
    calls = calls or shared_calls()

    async def models(request: Request) -> Response:
        started = time.monotonic()

        def left() -> Optional[float]:
            return None if request_timeout is None else max(0.0, request_timeout - (time.monotonic() - started))

        try:
            match, version = _route(request)
            name, label = match.group("name"), match.group("label")
            verb, metadata = match.group("verb"), match.group("metadata")
            if request.method == "GET" and verb is None:
                handler = _metadata if metadata else _status
                return JSONResponse(await calls.call_async(handler, repository, name, version, label, timeout=left(),
                                                           error=timeout_error))
            if request.method == "POST" and verb == "predict":
                try:
                    body = await asyncio.wait_for(read_body(request, max_body_bytes), left())
                except asyncio.TimeoutError:
                    raise _Refused(408, f"the request body did not arrive within the server's limit of "
                                        f"{request_timeout:g}s (--request-timeout-seconds)") from None
                return JSONResponse(await calls.call_async(_predict, repository, name, version, label, body,
                                                           timeout=left(), error=timeout_error))
            if request.method == "POST" and verb in ("classify", "regress"):
                raise invalid(f"'{verb}' is not supported by retrieval models; use :predict")
            raise not_found(f"Malformed request: {request.method} {request.url.path}")
        except _Refused as refused:
            return refused.response()
        except asyncio.CancelledError:  # uvicorn cancels what still runs when the shutdown grace period ends
            return _Refused(503, "the server shut down before the request finished: it ran past the shutdown "
                                 "grace period (--shutdown-grace-seconds); send it again").response()
        except ServingError as error:
            return _error(error)
        except ClientDisconnect:  # nobody to answer
            return Response(status_code=400)
        except RecursionError:  # input nested deeper than any check foresaw
            log.warning("%s %s: request nested too deeply to process", request.method, request.url.path)
            return _error(invalid("the request is nested too deeply to process"))
        except Exception as error:  # a server bug: answer in JSON, log one line (no traceback per request)
            log.error("%s %s: internal error: %s: %s", request.method, request.url.path, type(error).__name__,
                      _one_line(error))
            return _error(ServingError("INTERNAL", f"internal error: {type(error).__name__}: {_one_line(error)}"))

    return Starlette(routes=[Route("/v1/models/{path:path}", models, methods=["GET", "POST"])])
