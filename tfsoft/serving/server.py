"""``tfsoft serve``: a local model server speaking TF Serving's REST and gRPC APIs.

For machines without Docker (development, CI, small deployments): it loads the newest
version of an export directory, replays its warmup requests, picks up new versions while it
runs (:mod:`tfsoft.serving.repository`), and answers the same URLs, JSON and protos as
``tensorflow_model_server``, so clients and tests move to TF Serving unchanged. REST runs on
uvicorn (Starlette), gRPC on grpcio, model calls on a pool of worker threads both share.

The limits a production server has (body size, history length, request timeout, a graceful
shutdown on SIGTERM/SIGINT) and how TF Serving differs: :mod:`tfsoft.serving.limits`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Optional

from tfsoft.errors import TfsoftError
from tfsoft.serving.limits import (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HISTORY, DEFAULT_REQUEST_TIMEOUT_SECONDS,
                                   DEFAULT_SHUTDOWN_GRACE_SECONDS, ModelCalls)
from tfsoft.serving.repository import ModelRepository

log = logging.getLogger("tfsoft.serving")


class ModelServer:
    """REST (and optionally gRPC) front ends over one :class:`ModelRepository`.

    Args:
        export_dir: the model base path written by ``tfsoft export``.
        model_name: the name requests use (``/v1/models/<model_name>``).
        host: interface to bind (``127.0.0.1`` by default; ``0.0.0.0`` for all).
        rest_port: REST port (0 = any free port; :attr:`rest_port` tells which).
        grpc_port: gRPC port, or ``None`` for no gRPC.
        poll_seconds, num_versions, max_batch_size, labels: see :class:`ModelRepository`.
        max_body_bytes: largest REST request body (413 past it); 0 = no limit.
        max_history: longest id list per instance (``history``, ``exclude_item_ids``; 400 /
            ``INVALID_ARGUMENT`` past it); 0 = no limit.
        request_timeout: seconds a request may take (504 / ``DEADLINE_EXCEEDED``); 0 = no limit.
        shutdown_grace: seconds :meth:`stop` lets requests in flight finish.

    The limits and what TF Serving does instead: :mod:`tfsoft.serving.limits`.
    """

    def __init__(self, export_dir: str | Path, model_name: str, *, host: str = "127.0.0.1", rest_port: int = 8501,
                 grpc_port: Optional[int] = None, poll_seconds: float = 1.0, num_versions: int = 1,
                 max_batch_size: int = 1024, labels: Optional[Mapping[str, int]] = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_history: int = DEFAULT_MAX_HISTORY,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
                 shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_SECONDS):
        if not Path(export_dir).is_dir():
            raise TfsoftError(f"export directory '{export_dir}' does not exist; write one with tfsoft export")
        if not model_name or "/" in model_name or ":" in model_name:
            raise TfsoftError(f"model name must be non-empty without '/' or ':'; got {model_name!r}")
        for flag, value in (("--max-body-bytes", max_body_bytes), ("--max-history", max_history),
                            ("--request-timeout-seconds", request_timeout),
                            ("--shutdown-grace-seconds", shutdown_grace)):
            if value is None or not value >= 0:  # NaN too
                raise TfsoftError(f"{flag} must be >= 0 (0 = no limit); got {value!r}")
        self.repository = ModelRepository(export_dir, model_name, num_versions=num_versions,
                                          poll_seconds=poll_seconds, max_batch_size=max_batch_size, labels=labels,
                                          max_history=max_history)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.max_body_bytes, self.max_history = max_body_bytes, max_history
        self.request_timeout, self.shutdown_grace = request_timeout, shutdown_grace
        self.calls: Optional[ModelCalls] = None
        self._uvicorn = None
        self._rest_thread: Optional[threading.Thread] = None
        self._grpc = None

    def start(self, timeout: float = 30.0) -> "ModelServer":
        """Load the model, then start both front ends in background threads; returns when ready."""
        import uvicorn

        from tfsoft.serving.rest import make_app

        self.repository.start()
        self.calls = ModelCalls()
        if self.grpc_port is not None:
            from tfsoft.serving.grpc_service import make_grpc_server

            self._grpc, self.grpc_port = make_grpc_server(self.repository, self.host, self.grpc_port,
                                                          request_timeout=self.request_timeout, calls=self.calls)
            self._grpc.start()
        app = make_app(self.repository, max_body_bytes=self.max_body_bytes, request_timeout=self.request_timeout,
                       calls=self.calls)
        config = uvicorn.Config(app, host=self.host, port=self.rest_port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=self.shutdown_grace)
        self._uvicorn = uvicorn.Server(config)
        self._rest_thread = threading.Thread(target=self._uvicorn.run, name="rest", daemon=True)
        self._rest_thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._rest_thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise TfsoftError(f"the REST server did not start on {self.host}:{self.rest_port} "
                                  f"(port in use?)")
            time.sleep(0.02)
        self.rest_port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop accepting connections (REST and gRPC at once), let the requests in flight finish for up to
        ``grace`` seconds (default: ``shutdown_grace``), cut off the rest, then stop the version poller.
        Model calls abandoned at their timeout are not waited for."""
        grace = self.shutdown_grace if grace is None else grace
        grpc_stopped = self._grpc.stop(grace=grace) if self._grpc is not None else None
        if self._uvicorn is not None:
            self._uvicorn.config.timeout_graceful_shutdown = grace
            self._uvicorn.should_exit = True
            if self._rest_thread is not None:
                self._rest_thread.join(timeout=grace + 10)
        if grpc_stopped is not None:
            grpc_stopped.wait(grace + 5)
        if self.calls is not None:
            self.calls.shutdown()
        self.repository.stop()

    def _force_stop(self) -> None:
        """A second signal: stop waiting for requests in flight."""
        if self._uvicorn is not None:
            self._uvicorn.force_exit = True
        if self._grpc is not None:
            self._grpc.stop(grace=0)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start, then serve until SIGTERM or SIGINT (Ctrl-C); then shut down gracefully: no new
        connections, requests in flight answered (for up to ``shutdown_grace`` seconds; a second
        signal cuts that short), and return. Call from the main thread (signal handlers)."""
        import signal

        self.start()
        received: list[int] = []
        stopping = threading.Event()

        def on_signal(number, _frame):
            received.append(number)
            if stopping.is_set():
                self._force_stop()
            stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        print(self.banner(), flush=True)
        try:
            while not stopping.wait(0.5):
                pass
            log.info("%s: no new connections; finishing the requests in flight (up to %gs, "
                     "--shutdown-grace-seconds)", signal.Signals(received[0]).name, self.shutdown_grace)
        finally:
            started = time.monotonic()
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        abandoned = self.calls.running if self.calls is not None else 0
        left = f"; {abandoned} model call(s) still running (past their timeout or cut off), not waited for"
        log.info("stopped in %.1fs%s", time.monotonic() - started, left if abandoned else "")
        if abandoned:  # their (non-daemon) worker threads would hold the process until they return
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def banner(self) -> str:
        """The one line ``tfsoft serve`` prints once listening: the versions actually served (never
        ones that failed to load), or that nothing is served and why, and the addresses."""
        repository = self.repository
        grpc_text = f", gRPC on {self.host}:{self.grpc_port}" if self.grpc_port is not None else ""
        endpoints = f"REST on http://{self.host}:{self.rest_port}{grpc_text}"
        served = [str(version) for version in repository.loaded_versions()]
        failures = repository.failures()
        failed_text = "; ".join(f"version {version} failed to load: {_brief(message)}"
                                for version, message in failures.items())
        if served:
            extra = f"; {failed_text}" if failed_text else ""
            return (f"serving model '{repository.name}' (versions {served}) from '{repository.base_path}': "
                    f"{endpoints}{extra}")
        why = failed_text or "no version directory (an integer name) is there yet"
        if repository.poll_seconds > 0:
            polling = f"polling every {repository.poll_seconds:g}s for new or fixed versions"
        else:
            polling = "not polling (poll_seconds=0): restart once a version loads"
        return (f"model '{repository.name}' is NOT served yet: nothing loaded from '{repository.base_path}' ({why}); "
                f"{polling}; {endpoints}")


def _brief(message: str, limit: int = 400) -> str:
    text = " ".join(message.split())
    return text if len(text) <= limit else text[:limit - 20] + "... (see the log)"
