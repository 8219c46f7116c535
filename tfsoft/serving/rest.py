"""TF Serving's REST API on Starlette (ASGI), served by uvicorn.

Endpoints (as in TF Serving; ``[...]`` = optional, newest version by default)::

    GET  /v1/models/NAME[/versions/V | /labels/L]             model status
    GET  /v1/models/NAME[/versions/V | /labels/L]/metadata    signature definitions
    POST /v1/models/NAME[/versions/V | /labels/L]:predict     row or columnar predict

Errors are ``{"error": "..."}`` with TF Serving's HTTP status (400 for bad input, 404 for an
unknown model, version, label or URL). Predictions run in Starlette's thread pool, so slow
requests do not block the event loop. A request that breaks the server in an unforeseen way
still gets a JSON error (500, or 400 for input nested too deeply to process) and costs one log
line, not a traceback.
"""

from __future__ import annotations

import logging
import re

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tfsoft.serving.json_codec import decode_inputs, encode_outputs, parse_body, request_format
from tfsoft.serving.repository import ModelRepository
from tfsoft.serving.status import ServingError, invalid, not_found

log = logging.getLogger("tfsoft.serving")

MAX_BODY_BYTES = 64 * 1024 * 1024
_URL = re.compile(r"^/v1/models/(?P<name>[^/:]+)"
                  r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
                  r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")


def _error(error: ServingError) -> JSONResponse:
    # the message may quote the request, e.g. a signature_name "\ud800" that UTF-8 cannot encode
    message = error.message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": message}, status_code=error.http_status)


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


def make_app(repository: ModelRepository) -> Starlette:
    """The ASGI application serving ``repository`` under TF Serving's REST paths."""

    async def models(request: Request) -> JSONResponse:
        try:
            match, version = _route(request)
            name, label = match.group("name"), match.group("label")
            verb, metadata = match.group("verb"), match.group("metadata")
            if request.method == "GET" and verb is None:
                handler = _metadata if metadata else _status
                return JSONResponse(await run_in_threadpool(handler, repository, name, version, label))
            if request.method == "POST" and verb == "predict":
                body = await request.body()
                if len(body) > MAX_BODY_BYTES:
                    raise invalid(f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES} bytes")
                return JSONResponse(await run_in_threadpool(_predict, repository, name, version, label, body))
            if request.method == "POST" and verb in ("classify", "regress"):
                raise invalid(f"'{verb}' is not supported by retrieval models; use :predict")
            raise not_found(f"Malformed request: {request.method} {request.url.path}")
        except ServingError as error:
            return _error(error)
        except RecursionError:  # input nested deeper than any check foresaw
            log.warning("%s %s: request nested too deeply to process", request.method, request.url.path)
            return _error(invalid("the request is nested too deeply to process"))
        except Exception as error:  # a server bug: answer in JSON, log one line (no traceback per request)
            log.error("%s %s: internal error: %s: %s", request.method, request.url.path, type(error).__name__,
                      _one_line(error))
            return _error(ServingError("INTERNAL", f"internal error: {type(error).__name__}: {_one_line(error)}"))

    return Starlette(routes=[Route("/v1/models/{path:path}", models, methods=["GET", "POST"])])
