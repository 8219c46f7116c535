"""The limits of ``tfsoft serve``, and the worker threads model calls run on.

Each limit is a ``tfsoft serve`` flag (0 turns it off); TF Serving 2.20 is the reference
(``tensorflow_serving/model_servers/{main,server,http_server}.cc``):

``--max-body-bytes`` (:data:`DEFAULT_MAX_BODY_BYTES`, 16 MiB)
    A REST body over the limit is answered ``413`` with ``{"error": ...}`` and the
    connection is closed: a declared ``Content-Length`` over it before a byte of the body is
    read (no ``100 Continue`` is sent), a chunked body as soon as what arrived passes it, so
    at most the limit plus one chunk (and uvicorn's 64 KiB read buffer) is ever held. *TF Serving* has no REST limit: its
    libevent server appends the whole body to a string, whatever its size (only gzip bodies
    are capped, at 100 MB uncompressed); its gRPC limit is ``INT32_MAX`` (2 GiB,
    ``SetMaxMessageSize``), lowered with ``--grpc_channel_arguments``. tfsoft's gRPC limit
    stays 64 MiB per message (:data:`tfsoft.serving.grpc_service.MAX_MESSAGE_BYTES`; gRPC
    itself answers ``RESOURCE_EXHAUSTED`` past it); 16 MiB of JSON is ~2M int64 ids, a
    thousand 2,000-id histories.

``--max-history`` (:data:`DEFAULT_MAX_HISTORY`, 10,000 ids)
    An instance whose id list (every ``[batch, ?]`` input: ``history``, ``exclude_item_ids``)
    is longer is refused ``400`` / ``INVALID_ARGUMENT`` naming the input, its length and the
    limit. The exported signatures accept any length (``[None, None]``) and the query tower
    reads only the last ``max_history`` known ids (``assets.extra/tfsoft_export.json``), so
    the limit is a number, not the export's: it bounds what a padded batch costs (batch x
    length ids) without refusing clients that send whole histories with unknown ids in them.
    *TF Serving* has no such limit (only the signature's static shape, which is unknown here).

``--request-timeout-seconds`` (:data:`DEFAULT_REQUEST_TIMEOUT_SECONDS`, 30 s)
    A REST request not answered within it gets ``504`` (``DEADLINE_EXCEEDED``), a gRPC call
    ``DEADLINE_EXCEEDED`` (within the client's deadline when that is shorter). The deadline
    runs from the request's arrival: receiving the body (a body still arriving when it passes
    gets ``408`` and a closed connection: the client, not the model, was slow), waiting for
    a worker, decoding and the model call. Model calls run on :class:`ModelCalls` threads,
    never on the event loop, so a slow request delays no other. *TF Serving*:
    ``--rest_api_timeout_in_ms`` (default 30000) becomes the session run's
    ``RunOptions.timeout_in_ms``, and gRPC calls get the client's deadline; TF cancels the
    run. tfsoft cannot cancel a running TF function: the caller is answered at the deadline
    and the call finishes in the background, holding its worker until then (a call still
    queued for a worker is dropped).

``--shutdown-grace-seconds`` (:data:`DEFAULT_SHUTDOWN_GRACE_SECONDS`, 25 s)
    On SIGTERM or SIGINT the server stops accepting connections (REST and gRPC), answers
    the requests in flight, closes idle keep-alive connections, and exits 0; requests still
    running when the grace period ends are cut off (REST answers ``503`` JSON and closes the
    connection, grpcio ends gRPC calls ``UNAVAILABLE``) and the process still exits 0 (model
    calls still running are not waited for). A second signal cuts the wait short. 25 s fits
    Kubernetes' default ``terminationGracePeriodSeconds`` (30 s); ``docker stop`` waits 10 s
    unless given ``-t``. *TF Serving* installs no handler (tensorflow/serving#356, #1853,
    open): SIGTERM kills it at once, requests in flight fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Callable, Optional

from tfsoft.serving.status import ServingError

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_HISTORY = 10_000
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 25.0


def timed_out(seconds: float, flag_set: bool = True) -> ServingError:
    """The DEADLINE_EXCEEDED error of a request not answered within ``seconds``."""
    if flag_set:
        return ServingError("DEADLINE_EXCEEDED", f"the request was not answered within the server's limit of "
                                                 f"{seconds:g}s (--request-timeout-seconds)")
    return ServingError("DEADLINE_EXCEEDED", f"the request was not answered within the client's deadline "
                                             f"({seconds:.3g}s left when it arrived)")


class ModelCalls:
    """Worker threads for model calls, each awaited within a deadline.

    A call that times out is not interrupted (TensorFlow functions cannot be): its caller is
    answered and it runs on; :attr:`running` counts calls started and not finished, abandoned
    ones included. A call still waiting for a worker when its deadline passes never starts.

    Args:
        workers: thread count (default: ``ThreadPoolExecutor``'s, ``min(32, cpus + 4)``).
    """

    def __init__(self, workers: Optional[int] = None):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def submit(self, function: Callable, *args) -> concurrent.futures.Future:
        def counted():
            with self._lock:
                self._running += 1
            try:
                return function(*args)
            finally:
                with self._lock:
                    self._running -= 1

        return self._pool.submit(counted)

    def call(self, function: Callable, *args, timeout: Optional[float] = None, error: Optional[ServingError] = None):
        """``function(*args)`` on a worker; blocks at most ``timeout`` seconds (``None`` = no limit), then
        raises ``error`` (default: :func:`timed_out`)."""
        future = self.submit(function, *args)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # dropped if it has not started
            raise error or timed_out(timeout) from None

    async def call_async(self, function: Callable, *args, timeout: Optional[float] = None,
                         error: Optional[ServingError] = None):
        """:meth:`call` for the event loop: awaits the worker without blocking the loop."""
        future = asyncio.wrap_future(self.submit(function, *args))
        try:
            return await asyncio.wait_for(future, timeout)  # cancelling it cancels a call not yet started
        except asyncio.TimeoutError:
            raise error or timed_out(timeout) from None

    def shutdown(self) -> None:
        """Drop queued calls; running ones finish on their own (nothing waits for them)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


_shared: Optional[ModelCalls] = None
_shared_lock = threading.Lock()


def shared_calls() -> ModelCalls:
    """One process-wide :class:`ModelCalls`, for front ends built without their own."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ModelCalls()
        return _shared


def positive_or_none(value: Optional[float]) -> Optional[float]:
    """A limit as used: ``None`` for 0 or ``None`` (no limit)."""
    return value if value else None
