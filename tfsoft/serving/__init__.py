"""Serving: a TF-Serving-compatible local server (``tfsoft serve``) and REST/gRPC clients."""

from tfsoft.serving.client import Client, ids_array, pad_rows
from tfsoft.serving.status import ServingError

__all__ = ["Client", "ServingError", "ids_array", "pad_rows"]


def __getattr__(name):  # the server pulls in uvicorn/grpc: import it on first use
    if name == "ModelServer":
        from tfsoft.serving.server import ModelServer

        return ModelServer
    raise AttributeError(name)
