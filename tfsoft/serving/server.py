"""``tfsoft serve``: a local model server speaking TF Serving's REST and gRPC APIs.

For machines without Docker (development, CI, small deployments): it loads the newest
version of an export directory, replays its warmup requests, picks up new versions while it
runs (:mod:`tfsoft.serving.repository`), and answers the same URLs, JSON and protos as
``tensorflow_model_server``, so clients and tests move to TF Serving unchanged. REST runs on
uvicorn (Starlette), gRPC on grpcio.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Mapping, Optional

from tfsoft.errors import TfsoftError
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
    """

    def __init__(self, export_dir: str | Path, model_name: str, *, host: str = "127.0.0.1", rest_port: int = 8501,
                 grpc_port: Optional[int] = None, poll_seconds: float = 1.0, num_versions: int = 1,
                 max_batch_size: int = 1024, labels: Optional[Mapping[str, int]] = None):
        if not Path(export_dir).is_dir():
            raise TfsoftError(f"export directory '{export_dir}' does not exist; write one with tfsoft export")
        if not model_name or "/" in model_name or ":" in model_name:
            raise TfsoftError(f"model name must be non-empty without '/' or ':'; got {model_name!r}")
        self.repository = ModelRepository(export_dir, model_name, num_versions=num_versions,
                                          poll_seconds=poll_seconds, max_batch_size=max_batch_size, labels=labels)
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self._uvicorn = None
        self._rest_thread: Optional[threading.Thread] = None
        self._grpc = None

    def start(self, timeout: float = 30.0) -> "ModelServer":
        """Load the model, then start both front ends in background threads; returns when ready."""
        import uvicorn

        from tfsoft.serving.rest import make_app

        self.repository.start()
        if self.grpc_port is not None:
            from tfsoft.serving.grpc_service import make_grpc_server

            self._grpc, self.grpc_port = make_grpc_server(self.repository, self.host, self.grpc_port)
            self._grpc.start()
        config = uvicorn.Config(make_app(self.repository), host=self.host, port=self.rest_port, log_level="warning",
                                access_log=False, lifespan="off")
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

    def stop(self) -> None:
        """Stop the front ends and the version poller."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._rest_thread is not None:
                self._rest_thread.join(timeout=10)
        if self._grpc is not None:
            self._grpc.stop(grace=2).wait(5)
        self.repository.stop()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start, then block until Ctrl-C or SIGTERM."""
        import signal

        self.start()
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        print(self.banner(), flush=True)
        try:
            while not stopping.wait(0.5):
                pass
        finally:
            self.stop()

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
