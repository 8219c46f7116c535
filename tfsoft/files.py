"""Atomic file writes: a reader never sees a half-written file.

Everything tfsoft writes (vocabularies, configs, metrics, exports) goes to a temporary path
in the destination's directory and is then renamed into place with ``os.replace``, which is
atomic on POSIX file systems.

Artefacts that are read back later (checkpoints, exported versions) also get checksums in a
manifest (:func:`file_entry` writes an entry, :func:`entry_problem` checks a file against one):
a file whose bytes changed after it was written is named before anything loads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _default_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file
    (``mkstemp`` creates 0600 files, unreadable by e.g. a TF Serving user)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    The file gets the permissions a plain ``open(path, "w")`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path, in the destination's directory and with its suffix, that is renamed
    to ``path`` when the ``with`` block succeeds (and removed when it fails), for writers that
    want a file name rather than bytes (``model.save_weights``, ``figure.savefig``).

    Args:
        path: the destination.
        suffix: the temporary file's suffix, for writers that pick a format by it (default:
            the destination's last suffix; Keras needs ``.weights.h5``).

    Example:
        >>> with atomic_output("run/checkpoints/last.weights.h5") as tmp:  # doctest: +SKIP
        ...     model.save_weights(str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py want to create the file themselves
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: bytes read at a time when hashing (files are streamed, never read whole)
HASH_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file, read in :data:`HASH_CHUNK` chunks."""
    digest, size = hashlib.sha256(), 0
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def file_entry(path: str | os.PathLike) -> dict:
    """The manifest entry of a file: ``{"sha256": hex digest, "size": bytes}``."""
    sha256, size = file_sha256(path)
    return {"sha256": sha256, "size": size}


def entry_problem(path: str | os.PathLike, entries: list[dict], manifest: str | os.PathLike) -> str | None:
    """How ``path`` differs from the manifest entries it may match (:func:`file_entry`; usually one), or
    None when it matches one of them. The size is compared first, so a file cut short or grown is
    reported without reading it.

    Args:
        path: the file (it must exist).
        entries: the ``{"sha256", "size"}`` entries it is allowed to match.
        manifest: the manifest's name, for the message.
    """
    size = os.stat(path).st_size
    if all(size != entry["size"] for entry in entries):
        return f"it is {size} bytes, not the {entries[0]['size']} recorded in '{manifest}'"
    sha256, _ = file_sha256(path)
    if all(sha256 != entry["sha256"] for entry in entries):
        return (f"its sha256 is {sha256[:16]}..., not the {entries[0]['sha256'][:16]}... recorded in "
                f"'{manifest}'")
    return None


#: version of the manifest layout :func:`write_manifest` writes (readers refuse newer ones)
MANIFEST_VERSION = 1


def write_manifest(path: str | os.PathLike, kind: str, files: dict[str, dict]) -> Path:
    """Write a checksum manifest atomically::

        {"format": KIND, "version": 1, "algorithm": "sha256",
         "files": {NAME: {"sha256": HEX, "size": BYTES}, ...}}

    Args:
        path: the manifest file.
        kind: what it describes (``tfsoft-checkpoints``, ``tfsoft-export``); :func:`read_manifest` checks it.
        files: name (a path relative to the manifest's subject, ``/``-separated) -> entry (:func:`file_entry`).
    """
    return atomic_write_json(path, {"format": kind, "version": MANIFEST_VERSION, "algorithm": "sha256",
                                    "files": dict(sorted(files.items()))})


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in entry["sha256"])
            and isinstance(entry.get("size"), int) and not isinstance(entry["size"], bool) and entry["size"] >= 0)


def read_manifest(path: str | os.PathLike, kind: str) -> dict[str, dict]:
    """The ``files`` of a manifest written by :func:`write_manifest`, checked.

    Raises:
        ValueError: the file is not such a manifest of ``kind`` (the message says why).
        OSError: it cannot be read.
    """
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"it is not valid JSON ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise ValueError(f"it is not a {kind} manifest")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"its version is {version!r}, not a positive integer")
    if version > MANIFEST_VERSION:
        raise ValueError(f"it has version {version}, written by a newer tfsoft (this one reads version "
                         f"{MANIFEST_VERSION})")
    if payload.get("algorithm") != "sha256":
        raise ValueError(f"its algorithm is {payload.get('algorithm')!r}, not 'sha256'")
    files = payload.get("files")
    if not isinstance(files, dict):
        raise ValueError("it has no 'files' object")
    for name, entry in files.items():
        replacing = entry.get("replacing") if isinstance(entry, dict) else None
        if not _valid_entry(entry) or (replacing is not None and not _valid_entry(replacing)):
            raise ValueError(f"its entry for {name!r} is not {{'sha256': 64 hex digits, 'size': bytes}}")
    return files
