"""The ``_SUCCESS`` manifest of a batch job, and the per-shard manifests it is made of.

A shard that has committed all its parts writes ``_shards/<label>.json``; the shard that
finds every shard's manifest present (with the same job fingerprint) writes ``_SUCCESS``: the
sum of their counts and the list of their files. Both are written atomically, and ``_SUCCESS``
is the same whichever shard writes it last, so two shards finishing together cannot clash::

    {"format": "tfsoft-batch", "version": 1, "job": FINGERPRINT, "shards": N,
     "model": {"name", "version", "path", "index", "signature"},
     "input": {"fingerprint": SHA256, "files": [...]},
     "settings": {"k", "exclude_seen", "unknown_users", "part_size", "columns"},
     "counts": {"users_read", "users_written", "users_unknown", "rows_rejected"},
     "parts": [FILE, ...], "rejects": [FILE, ...]}

``users_read`` counts every row of the shard(s), rejected rows included:
``users_read = users_written + rows_rejected + (users_unknown if skipped)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from tfsoft.files import atomic_write_json

FORMAT = "tfsoft-batch"
COUNTS = ("users_read", "users_written", "users_unknown", "rows_rejected")


def read_json(path: Path) -> Optional[dict]:
    """A manifest, or None when absent or unreadable (a half-written one cannot exist: atomic writes)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


def shard_manifest(job: str, shard, description: dict, counts: dict, parts: list, rejects: list,
                   seconds: float) -> dict:
    """The manifest of one finished shard."""
    return {"format": FORMAT, "version": 1, "job": job, "shard": shard.index, "shards": shard.count,
            **description, "counts": {name: int(counts[name]) for name in COUNTS}, "parts": sorted(parts),
            "rejects": sorted(rejects), "seconds": round(seconds, 3)}


def combine(manifests: list[dict]) -> dict:
    """``_SUCCESS`` from every shard's manifest (same job): counts summed, files listed."""
    first = manifests[0]
    out = {key: value for key, value in first.items() if key not in ("shard", "counts", "parts", "rejects", "seconds")}
    out["counts"] = {name: sum(m["counts"][name] for m in manifests) for name in COUNTS}
    out["parts"] = sorted(name for m in manifests for name in m["parts"])
    out["rejects"] = sorted(name for m in manifests for name in m["rejects"])
    return out


def finish_shard(out: Path, label: str, manifest: dict, shards_dir: str, success: str) -> Optional[dict]:
    """Write this shard's manifest; if every shard of the job is now complete, write ``_SUCCESS``.

    Returns:
        the ``_SUCCESS`` manifest when this call wrote it (or it was already complete), else None.
    """
    atomic_write_json(out / shards_dir / f"{label}.json", manifest)
    return try_complete(out, manifest["job"], manifest["shards"], shards_dir, success)


def try_complete(out: Path, job: str, count: int, shards_dir: str, success: str) -> Optional[dict]:
    """``_SUCCESS`` of job ``job``: read when already written, else written when all ``count`` shard
    manifests of the job are present; None while a shard is missing."""
    existing = read_json(out / success)
    if existing is not None and existing.get("job") == job:
        return existing
    manifests = []
    for index in range(count):
        other = read_json(out / shards_dir / f"{index:05d}-of-{count:05d}.json")
        if other is None or other.get("job") != job:
            return None
        manifests.append(other)
    combined = combine(manifests)
    atomic_write_json(out / success, combined)
    return combined
