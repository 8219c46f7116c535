"""TF Serving model base paths: integer version directories, published atomically.

TF Serving (and ``tfsoft serve``) watch a base path and load the directories whose names are
integers. An export is written into a hidden staging directory in the same base path
(``.staging-<version>-<pid>``, not an integer, so never loaded) and renamed to ``<version>``
once complete: a poller sees either no new version or a whole one. A staging directory left
by a killed export is removed by the next export once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from tfsoft.errors import ExportError

_STAGING = re.compile(r"^\.staging-(\d+)-(\d+)$")


def list_versions(base_path: str | Path) -> list[int]:
    """Published versions under ``base_path`` (integer directory names), ascending."""
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(int(entry.name) for entry in base.iterdir()
                  if entry.name.isdigit() and entry.is_dir())


def next_version(base_path: str | Path) -> int:
    """One more than the newest published version (1 for an empty base path)."""
    versions = list_versions(base_path)
    return versions[-1] + 1 if versions else 1


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_staging(base_path: str | Path) -> list[Path]:
    """Delete staging directories whose exporting process no longer runs; returns them."""
    base = Path(base_path)
    removed = []
    if base.is_dir():
        for entry in base.iterdir():
            match = _STAGING.match(entry.name)
            if match and not _process_alive(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def publish_version(base_path: str | Path, version: int | None = None) -> Iterator[tuple[Path, int]]:
    """Stage a new version directory and publish it by rename when the block succeeds.

    Yields ``(staging directory, version)``; write the model into the staging directory.
    On an exception the staging directory is removed and nothing is published.

    Raises:
        ExportError: ``version`` is not a positive integer, or is already published (a
            version is never overwritten: TF Serving would not reload it).
    """
    base = Path(base_path)
    if base.exists() and not base.is_dir():
        raise ExportError(f"export directory '{base}' exists and is not a directory")
    base.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(base)
    if version is None:
        version = next_version(base)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"version must be a positive integer; got {version!r}")
    final = base / str(version)
    if final.exists():
        raise ExportError(f"version {version} already exists in '{base}'; versions are never overwritten "
                          f"(next free version: {next_version(base)})")
    staging = base / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging, version
        _fsync_tree(staging)
        if final.exists():
            raise ExportError(f"version {version} appeared in '{base}' while this export was written")
        os.rename(staging, final)
        _fsync_dir(base)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file of a staged version, so the renamed directory is durable."""
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))
