"""Serving: a TF-Serving-compatible local server and REST/gRPC clients."""

from tfsoft.serving.status import ServingError

__all__ = ["ServingError"]
