"""A model base path watched for new versions, as TF Serving's file-system source does.

:class:`ModelRepository` loads the newest ``num_versions`` integer version directories of a
base path, replays each one's ``assets.extra/tf_serving_warmup_requests`` before serving it,
and polls the base path every ``poll_seconds``: a new version is loaded and warmed up in the
background and then swapped in atomically; versions that fall out of the window are
unloaded, and their memory freed at once (a full garbage collection: a loaded SavedModel is
held in reference cycles). A version that fails to load is reported in the status (state
``END`` with its error) and passed over for the next older one, while the versions already
loaded keep serving. Like TF Serving's file-system source, later polls try it again, but
only once its directory changed (a stat signature of every file and folder in it: names,
sizes, mtimes, ctimes, inodes): a broken export that stays broken costs one stat walk per
poll and one log line, and a fixed one (files copied in later, even with ``cp -r``, which is
not atomic) is served on the first poll that can load it.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from tfsoft.export.manifest import verify_export
from tfsoft.export.versions import list_versions
from tfsoft.export.warmup import WARMUP_FILE, read_warmup_requests
from tfsoft.serving.loaded_model import LoadedVersion
from tfsoft.serving.status import not_found

log = logging.getLogger("tfsoft.serving")


@dataclass(frozen=True)
class LoadFailure:
    """Why a version did not load, and what its directory looked like when it was tried."""

    message: str
    signature: tuple


def directory_signature(path: Path) -> tuple:
    """Names, sizes, mtimes, ctimes and inodes of ``path`` and everything under it (sorted by name):
    changes when files are added, removed, rewritten or touched (``cp -p`` too: its ctime moves).
    Unreadable entries count as their error."""
    entries = []

    def add(entry_path: str) -> None:
        try:
            info = os.stat(entry_path)
            entries.append((os.path.relpath(entry_path, path), info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                            info.st_ino))
        except OSError as error:
            entries.append((os.path.relpath(entry_path, path), type(error).__name__))

    add(str(path))
    for root, folders, files in os.walk(path, onerror=lambda error: entries.append(("walk", str(error)))):
        for name in folders + files:
            add(os.path.join(root, name))
    return tuple(sorted(entries, key=lambda entry: entry[0]))


class ModelRepository:
    """The loaded versions of one model.

    Args:
        base_path: the export directory (``<base>/<version>/saved_model.pb``).
        name: the model name requests must use.
        num_versions: how many of the newest versions stay loaded (TF Serving's ``latest`` policy).
        poll_seconds: how often the base path is scanned; 0 disables polling.
        max_batch_size: largest batch a request may carry.
        max_history: longest id list per instance (``None`` or 0: no limit); see :class:`LoadedVersion`.
        labels: version labels, e.g. ``{"stable": 3, "canary": 4}``.
    """

    def __init__(self, base_path: str | Path, name: str, *, num_versions: int = 1, poll_seconds: float = 1.0,
                 max_batch_size: int = 1024, labels: Optional[Mapping[str, int]] = None,
                 max_history: Optional[int] = None):
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1; got {num_versions}")
        self.base_path, self.name = Path(base_path), name
        self.num_versions, self.poll_seconds, self.max_batch_size = num_versions, poll_seconds, max_batch_size
        self.max_history = max_history
        self.labels = dict(labels or {})
        self._loaded: dict[int, LoadedVersion] = {}
        self._failed: dict[int, LoadFailure] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._collect_pending = False  # a version was unloaded at the last refresh

    # ------------------------------------------------------------------ loading
    def refresh(self) -> list[int]:
        """Load new versions in the window, unload old ones; returns the versions loaded now.

        The newest ``num_versions`` versions that load are kept; a version that fails to load is
        passed over for the next older one. A version that failed before is a candidate again
        once its directory changed; one whose directory is gone is forgotten.
        """
        on_disk = list_versions(self.base_path)
        with self._lock:
            for version in [v for v in self._failed if v not in on_disk]:
                del self._failed[version]
            failed = dict(self._failed)
        served = 0  # newest first; a version that fails gives its place to the next older one
        for version in reversed(on_disk):
            if served == self.num_versions:
                break
            if version in self._loaded:
                served += 1
                continue
            signature = None
            if version in failed:  # only versions that could be served are stat-walked
                signature = directory_signature(self.base_path / str(version))
                if signature == failed[version].signature:
                    continue  # unchanged since it failed: passed over, not retried
            if self._load(version, signature):
                served += 1
        with self._lock:
            keep = set(sorted(self._loaded)[-self.num_versions:])
            unloaded = [v for v in self._loaded if v not in keep]
            for version in unloaded:
                del self._loaded[version]
                log.info("model %s: unloaded version %d", self.name, version)
            loaded_now = sorted(self._loaded)
        if unloaded or self._collect_pending:
            # A loaded SavedModel is a web of reference cycles: dropping it frees nothing until Python's next
            # full collection, which may come only after several more versions were loaded (each one's
            # variables held twice meanwhile). Collect now, and once more at the next refresh for a version
            # that requests still in flight held on to.
            gc.collect()
            self._collect_pending = bool(unloaded)
        return loaded_now

    def _load(self, version: int, signature: Optional[tuple] = None) -> bool:
        path = self.base_path / str(version)
        retry = version in self._failed
        if signature is None:  # taken before loading: a change during the attempt earns another one
            signature = directory_signature(path)
        try:
            verify_export(path)  # a damaged or half-copied file is named, and the version not served
            loaded = LoadedVersion(path, version, max_batch_size=self.max_batch_size, max_history=self.max_history)
            warmup = path / "assets.extra" / WARMUP_FILE
            count = loaded.warmup(read_warmup_requests(warmup)) if warmup.is_file() else 0
        except Exception as error:  # a broken export must not take the server down
            message = f"{type(error).__name__}: {error}"
            with self._lock:
                self._failed[version] = LoadFailure(message, signature)
            log.error("model %s: version %d failed to load%s (tried again when '%s' changes): %s", self.name,
                      version, " again" if retry else "", path, " ".join(message.split()))
            return False
        with self._lock:
            self._failed.pop(version, None)
            self._loaded[version] = loaded
        log.info("model %s: version %d available (load %.2fs, %d warmup requests %.2fs)", self.name, version,
                 loaded.load_seconds, count, loaded.warmup_seconds)
        return True

    def start(self) -> "ModelRepository":
        """Load what is there now and start polling in a daemon thread."""
        self.refresh()
        if self.poll_seconds > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name=f"poll-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as error:  # pragma: no cover - e.g. the base path vanished for a moment
                log.error("model %s: polling '%s' failed: %s", self.name, self.base_path, error)

    def failures(self) -> dict[int, str]:
        """The versions that failed to load (and were not loaded since), with their errors."""
        with self._lock:
            return {version: failure.message for version, failure in sorted(self._failed.items())}

    def loaded_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._loaded)

    # ------------------------------------------------------------------ lookup
    def get(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> LoadedVersion:
        """The version a request names (newest when neither ``version`` nor ``label`` is given)."""
        if name != self.name:
            raise not_found(f"Servable not found for request: {_request_text(name, version, label)}; "
                            f"this server serves model '{self.name}'")
        if label is not None:
            if label not in self.labels:
                raise not_found(f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        with self._lock:
            if version is None:
                if not self._loaded:
                    raise not_found(f"Servable not found for request: Latest({name}); no version of "
                                    f"'{self.base_path}' is loaded")
                return self._loaded[max(self._loaded)]
            if version not in self._loaded:
                raise not_found(f"Servable not found for request: Specific({name}, {version}); loaded versions: "
                                f"{sorted(self._loaded) or 'none'}")
            return self._loaded[version]

    def status(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> list[dict]:
        """``model_version_status`` entries, as TF Serving's GetModelStatus reports them."""
        if name != self.name:
            raise not_found(f"Could not find any versions of model {name}")
        if label is not None:
            self.get(name, label=label)
            version = self.labels[label]
        with self._lock:
            entries = {v: ("AVAILABLE", "OK", "") for v in self._loaded}
            entries.update({v: ("END", "UNKNOWN", failure.message) for v, failure in self._failed.items()})
        if version is not None:
            if version not in entries:
                raise not_found(f"Could not find version {version} of model {name}")
            entries = {version: entries[version]}
        if not entries:
            raise not_found(f"Could not find any versions of model {name}")
        return [{"version": str(v), "state": state, "status": {"error_code": code, "error_message": message}}
                for v, (state, code, message) in sorted(entries.items(), reverse=True)]


def _request_text(name, version, label) -> str:
    if label is not None:
        return f"Labeled({name}, {label})"
    return f"Specific({name}, {version})" if version is not None else f"Latest({name})"
