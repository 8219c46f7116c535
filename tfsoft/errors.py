"""Exceptions raised by tfsoft for bad user input.

Every message names what was received and what was expected (file, column, row, field),
so a user can fix the input without reading a traceback.
"""

from __future__ import annotations


class TfsoftError(Exception):
    """Base class of every error tfsoft raises on purpose."""


class DataError(TfsoftError, ValueError):
    """An interactions file or DataFrame is malformed (missing column, null id, ...)."""


class ConfigError(TfsoftError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class RunError(TfsoftError):
    """A run directory is missing, incomplete, inconsistent with its data, or would be overwritten."""


class TrainingInterrupted(TfsoftError):
    """Training stopped on Ctrl-C (KeyboardInterrupt); the message says which checkpoints are usable."""


class ExportError(TfsoftError):
    """An export cannot be written: bad version, existing version, index below its recall floor."""
