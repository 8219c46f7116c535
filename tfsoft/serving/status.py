"""Serving errors with TF Serving's status codes and their HTTP / gRPC equivalents."""

from __future__ import annotations

from tfsoft.errors import TfsoftError

# canonical code -> HTTP status, as TF Serving's REST layer maps them
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}


class ServingError(TfsoftError):
    """A request the server refuses: ``code`` is a canonical status name (``INVALID_ARGUMENT``,
    ``NOT_FOUND``, ...) and the message says what was wrong, as TF Serving words it."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def grpc_code(self):
        import grpc

        return getattr(grpc.StatusCode, self.code)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
