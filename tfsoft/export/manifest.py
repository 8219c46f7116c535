"""Checksums of an exported version: ``<version>/assets.extra/tfsoft_manifest.json``.

``tfsoft export`` writes it last, atomically, into the staged version directory (before the
version is published by rename): the sha256 and size of every other file of the version, keyed
by its ``/``-separated path relative to the version directory::

    {"format": "tfsoft-export", "version": 1, "algorithm": "sha256",
     "files": {"saved_model.pb": {"sha256": "9c1f...", "size": 123456},
               "variables/variables.data-00000-of-00001": {...}, ...}}

TF Serving ignores ``assets.extra/`` (except its warmup requests file), so the manifest changes
nothing for it. :func:`verify_export` checks a version against it before anything loads the
version (``tfsoft recommend --export-dir``; the serving loader), naming each missing, changed or
unlisted file. A version exported before the manifest existed (its ``tfsoft_export.json`` does
not name one) is not verified; one whose ``tfsoft_export.json`` names a manifest that is gone is
refused.

This module imports no TensorFlow (though ``tfsoft.export``'s package import does).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tfsoft.errors import ExportError
from tfsoft.files import entry_problem, file_entry, read_manifest, write_manifest

MANIFEST_FILE = "tfsoft_manifest.json"
#: the manifest's path relative to the version directory
MANIFEST_PATH = f"assets.extra/{MANIFEST_FILE}"
MANIFEST_KIND = "tfsoft-export"
_METADATA_PATH = "assets.extra/tfsoft_export.json"  # tfsoft.export.exporter.METADATA_FILE (imports TensorFlow)


@dataclass(frozen=True)
class VerifiedExport:
    """What :func:`verify_export` checked.

    Attributes:
        path: the version directory.
        files: files whose size and sha256 matched the manifest.
        size_bytes: their total size.
        verified: False for a version exported before manifests existed (nothing was checked).
    """

    path: Path
    files: int
    size_bytes: int
    verified: bool = True


def _version_files(version_dir: Path) -> list[str]:
    """Every file under ``version_dir`` as a sorted ``/``-separated relative path, the manifest excluded."""
    names = []
    for root, _, files in os.walk(version_dir):
        for name in files:
            relative = Path(root, name).relative_to(version_dir).as_posix()
            if relative != MANIFEST_PATH:
                names.append(relative)
    return sorted(names)


def write_export_manifest(version_dir: str | Path) -> Path:
    """Hash every file of a (staged) version directory into :data:`MANIFEST_PATH`, atomically.
    Call it last: a file written after it is reported by :func:`verify_export` as not written by
    the export."""
    version_dir = Path(version_dir)
    files = {name: file_entry(version_dir / name) for name in _version_files(version_dir)}
    return write_manifest(version_dir / MANIFEST_PATH, MANIFEST_KIND, files)


def _names_a_manifest(version_dir: Path) -> bool:
    try:
        metadata = json.loads((version_dir / _METADATA_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and "manifest" in metadata


def verify_export(version_dir: str | Path) -> VerifiedExport:
    """Check every file of an exported version against its manifest (module docstring).

    Returns:
        what was checked (``verified=False``, nothing checked, for a version exported before
        manifests existed).

    Raises:
        ExportError: the directory is missing, the manifest is missing (when ``tfsoft_export.json``
            names one) or unreadable, or a file is missing, changed (size or sha256) or not
            written by the export; the message names every such file.
    """
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise ExportError(f"exported version '{version_dir}' does not exist or is not a directory")
    manifest = version_dir / MANIFEST_PATH
    if not manifest.exists():
        if _names_a_manifest(version_dir):
            raise ExportError(f"exported version '{version_dir}' cannot be verified: its checksum manifest "
                              f"'{manifest}' is missing (tfsoft_export.json says the export wrote one); "
                              f"export the run again")
        return VerifiedExport(version_dir, 0, 0, verified=False)
    try:
        files = read_manifest(manifest, MANIFEST_KIND)
    except (OSError, ValueError) as error:
        raise ExportError(f"exported version '{version_dir}' cannot be verified: its checksum manifest "
                          f"'{manifest}' cannot be read ({error}); export the run again") from None

    problems, total = [], 0
    for name, entry in sorted(files.items()):
        path = version_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST_PATH:
            problems.append(f"the manifest lists '{name}', which is not a file of the version")
        elif not path.is_file():
            problems.append(f"'{path}' is missing")
        else:
            problem = entry_problem(path, [entry], manifest)
            if problem is not None:
                problems.append(f"'{path}' is damaged: {problem}")
            else:
                total += entry["size"]
    problems += [f"'{version_dir / name}' was not written by the export (it is not in '{manifest}'; remove it)"
                 for name in _version_files(version_dir) if name not in files]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ExportError(f"exported version '{version_dir}' does not match its checksum manifest: {shown}. Export the run again (tfsoft "
                          f"export writes a new version) or restore the version from an intact copy")
    return VerifiedExport(version_dir, len(files), total)
