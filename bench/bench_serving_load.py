"""Load and soak: ``tfsoft serve`` under concurrent clients, with malformed requests and a hot version swap.

The server runs as its own process (``tfsoft serve``, :class:`bench_serving.ServeProcess`) on
127.0.0.1 and polls its model base path for new versions (``--poll-seconds``, 1 s as TF
Serving's default). The model is a synthetic servable of bench/bench_serving.py
(:func:`bench_serving.synthetic_servable`: precomputed user vectors, ``user_id`` input, a
ScaNN index by default, top-100, 100 warmup records), over a clustered catalog of
``--catalog`` items:

* version 1 is published before the server starts;
* version 2 (other user vectors, item ids shifted by :data:`VERSION_ID_OFFSET`, so every answer
  tells which version gave it) is built beforehand outside the base path and, at ``--swap-at`` of
  the timed window, written into the base path while the server is under load, the way
  ``tfsoft export`` publishes (a hidden staging directory renamed into place,
  :func:`tfsoft.export.versions.publish_version`). The server loads and warms it up in the
  background and swaps it in; version 1 is unloaded (``--num-versions 1``). ``--swaps N`` writes
  versions 2..N+1 the same way, spread from ``--swap-at`` to 90 % of the window (a soak of
  repeated swaps: memory per swap).

``--clients`` threads (64) each hold one keep-alive ``http.client`` connection and send
requests back to back (closed loop) for ``--warmup-seconds`` (not counted), then for
``--seconds`` (timed). Request bodies are encoded before the run, so the client does little
besides the socket calls and a ``json.loads`` of each valid answer (to check it). A share
``--invalid-share`` of the requests are deliberately invalid (:data:`INVALID_REQUESTS`: broken
JSON, unknown signature, wrong input name or type, nesting deeper than the input's rank, a
batch over the limit, unknown model or version, a declared body over ``--max-body-bytes``);
each must get its 4xx, and they are counted apart from the valid ones.

Recorded: requests total, valid and invalid; failed valid requests (anything but a 200 with
100 item ids from one version, including connection errors); answers by HTTP status (5xx
must be 0); the invalid kinds and their statuses; p50/p95/p99/max latency of valid requests
(and per 5-s window); throughput; the server's RSS (``/proc/<pid>/status``) after the warm-up
and after the run (growth must stay under 10 %), sampled every 0.5 s in between; CPU seconds
of server and client; which version answered first and last, when each new version was
written, when the status API first showed it and its first and last answers; the server's exit
status after SIGTERM and its ERROR/Traceback log lines.

Writes bench/results/serving_load.json (one swap, 20k items); the soak of repeated swaps over a
larger catalog writes bench/results/serving_load_soak.json:

    mkdir -p /work/locks && flock /work/locks/timing.lock \\
        env TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_serving_load.py
    flock /work/locks/timing.lock env TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_serving_load.py \\
        --catalog 100000 --clusters 2000 --swaps 4 --swap-at 0.2 --out bench/results/serving_load_soak.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_serving import (REST_K, ServeProcess, _version, clustered_catalog, latency_stats,  # noqa: E402
                           queries_near, synthetic_servable)
from common import machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tfsoft"
VERSION_ID_OFFSET = 10_000_000  # version v's item ids = version 1's + (v - 1) * this
MAX_BODY_BYTES = 16 * 1024 * 1024  # tfsoft serve's default --max-body-bytes
WINDOW_SECONDS = 5.0

FULL = dict(clients=64, seconds=60.0, warmup_seconds=5.0, catalog=20_000, users=1000, clusters=200, kind="scann",
            invalid_share=0.05, swap_at=0.5, swaps=1, poll_seconds=1.0)
QUICK = dict(clients=4, seconds=3.0, warmup_seconds=0.5, catalog=2000, users=100, clusters=20, kind="brute_force",
             invalid_share=0.2, swap_at=0.3, swaps=1, poll_seconds=0.2)


def _json(value) -> bytes:
    return json.dumps(value).encode()


# kind -> (path suffix, body (None: a declared Content-Length over the limit and no body), expected status)
INVALID_REQUESTS = {
    "malformed_json": (":predict", b'{"inputs": {"user_id": [1, 2', 400),
    "unknown_signature": (":predict", _json({"signature_name": "no_such_signature", "inputs": {"user_id": [1]}}), 400),
    "wrong_input_name": (":predict", _json({"inputs": {"history": [[1, 2, 3]]}}), 400),
    "wrong_input_type": (":predict", _json({"inputs": {"user_id": ["one"]}}), 400),
    "nested_too_deep": (":predict", b'{"inputs": {"user_id": ' + b"[" * 200 + b"1" + b"]" * 200 + b"}}", 400),
    "batch_over_limit": (":predict", _json({"inputs": {"user_id": list(range(1, 1026))}}), 400),
    "unknown_model": ("@no_such_model:predict", _json({"inputs": {"user_id": [1]}}), 404),
    "unknown_version": ("/versions/999:predict", _json({"inputs": {"user_id": [1]}}), 404),
    "body_over_limit": (":predict", None, 413),
}


def request_path(suffix: str) -> str:
    if suffix.startswith("@"):
        return f"/v1/models/{suffix[1:]}"
    return f"/v1/models/{MODEL}{suffix}"


def answer_version(data: bytes, k: int = REST_K) -> int:
    """The version a valid answer came from (from its item ids); raises ValueError for a wrong answer."""
    ids = json.loads(data)["outputs"]["item_ids"]
    if len(ids) != 1 or len(ids[0]) != k:
        raise ValueError(f"expected [1, {k}] item ids; got {len(ids)} rows")
    versions = {1 + (item - 1) // VERSION_ID_OFFSET for item in ids[0] if item > 0}
    if len(versions) != 1:
        raise ValueError(f"item ids of versions {sorted(versions)} in one answer")
    return versions.pop()


class LoadRun:
    """Closed-loop clients against one server for a time window; records one tuple per request:
    ``(start seconds since the window opened, latency ms, kind, HTTP status (0: no answer), version or
    None, error or None)``, kind ``valid`` or an :data:`INVALID_REQUESTS` key."""

    def __init__(self, port: int, clients: int, users: int, invalid_share: float, seed: int = 0,
                 timeout: float = 120.0):
        self.port, self.clients, self.invalid_share, self.seed, self.timeout = port, clients, invalid_share, seed, timeout
        self.valid_bodies = [_json({"signature_name": "serving_default", "inputs": {"user_id": [user]}})
                             for user in range(1, users + 1)]
        self.records: list[tuple] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def _client(self, worker: int, opened: float, stop_at: float) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        invalid_kinds = sorted(INVALID_REQUESTS)
        connection = self._connection()
        records = []
        while True:
            begun = time.perf_counter()
            if begun >= stop_at:
                break
            if rng.random() < self.invalid_share:
                kind = rng.choice(invalid_kinds)
                suffix, body, _ = INVALID_REQUESTS[kind]
            else:
                kind, suffix, body = "valid", ":predict", rng.choice(self.valid_bodies)
            status, version, error = 0, None, None
            try:
                if body is None:  # a declared body over the limit: refused (413) before it is sent
                    connection.putrequest("POST", request_path(suffix))
                    connection.putheader("Content-Type", "application/json")
                    connection.putheader("Content-Length", str(4 * MAX_BODY_BYTES))
                    connection.endheaders()
                else:
                    connection.request("POST", request_path(suffix), body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                status = response.status
                if body is None or response.will_close:
                    connection.close()  # the server closed it (413); the next request reconnects
                if kind == "valid":
                    if status == 200:
                        version = answer_version(data)
                    else:
                        error = f"HTTP {status}: {data[:200].decode(errors='replace')}"
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as failure:
                error = f"{type(failure).__name__}: {failure}"
                connection.close()
                connection = self._connection()
            records.append((begun - opened, 1000 * (time.perf_counter() - begun), kind, status, version, error))
        connection.close()
        with self._lock:
            self.records.extend(records)

    def run(self, seconds: float, during=None) -> float:
        """Run the clients for ``seconds``; ``during(opened)`` runs in this thread meanwhile. The window's
        start (``time.perf_counter()``)."""
        self.records = []
        opened = time.perf_counter()
        stop_at = opened + seconds
        threads = [threading.Thread(target=self._client, args=(worker, opened, stop_at), name=f"client-{worker}",
                                    daemon=True) for worker in range(self.clients)]
        for thread in threads:
            thread.start()
        if during is not None:
            during(opened, stop_at)
        for thread in threads:
            thread.join(self.timeout + seconds + 60)
        return opened


class Monitor:
    """Every ``interval`` s: the server's RSS and the versions its status API reports."""

    def __init__(self, server: ServeProcess, interval: float = 0.5):
        self.server, self.interval = server, interval
        self.rss: list[tuple[float, float]] = []
        self.status: list[tuple[float, list]] = []
        self._stop = threading.Event()
        self._thread = None
        self._opened = None

    def _status(self, connection) -> list:
        connection.request("GET", f"/v1/models/{MODEL}")
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            return [f"HTTP {response.status}"]
        return sorted(int(entry["version"]) for entry in json.loads(data)["model_version_status"]
                      if entry["state"] == "AVAILABLE")

    def _loop(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        while not self._stop.is_set():
            now = time.perf_counter() - self._opened
            self.rss.append((now, self.server.rss_bytes() / 2**20))
            try:
                versions = self._status(connection)
            except (OSError, http.client.HTTPException, ValueError) as error:
                versions = [f"{type(error).__name__}"]
                connection.close()
            if not self.status or self.status[-1][1] != versions:
                self.status.append((now, versions))
            self._stop.wait(self.interval)
        connection.close()

    def start(self, opened: float) -> None:
        self._opened = opened
        self._thread = threading.Thread(target=self._loop, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def build_versions(scratch: Path, catalog: int, users: int, clusters: int, kind: str, seed: int,
                   versions: int = 2) -> tuple:
    """Version 1 published in ``scratch/model``; versions 2.. built in ``scratch/prebuilt`` (copied in later).
    Each has its own user vectors and item ids shifted by ``(version - 1) * VERSION_ID_OFFSET``."""
    embeddings = clustered_catalog(catalog, num_clusters=clusters, seed=seed)
    tune_queries = queries_near(embeddings, 300, seed=seed + 11)
    base, prebuilt = scratch / "model", scratch / "prebuilt"
    exports = {}
    for version in range(1, versions + 1):
        started = time.perf_counter()
        user_vectors = queries_near(embeddings, users, seed=seed + 10 * version)
        exports[str(version)] = synthetic_servable(base if version == 1 else prebuilt, kind, embeddings, user_vectors,
                                                   tune_queries, version=version,
                                                   item_id_offset=(version - 1) * VERSION_ID_OFFSET)
        exports[str(version)]["export_seconds"] = time.perf_counter() - started
    return base, prebuilt, exports


def publish_copy(source: Path, base: Path, version: int) -> None:
    """Write version ``version`` into ``base`` as ``tfsoft export`` does: copy into a staging directory,
    then rename it into place."""
    from tfsoft.export.versions import publish_version

    with publish_version(base, version) as (staging, _):
        shutil.copytree(source, staging, dirs_exist_ok=True)


def swap_memory(samples: list[tuple[float, float]], written: dict, rss_start: float, rss_end: float) -> dict:
    """RSS just before each new version was written and what each swap added (the next mark - this one;
    the last swap: the end - its mark), and what serving alone added (from the start to the first mark)."""
    marks = {}
    for version, times in sorted(written.items(), key=lambda item: int(item[0])):
        before = [value for at, value in samples if at < times["write_started_s"]]
        marks[version] = before[-1] if before else rss_start
    values = list(marks.values())
    added = [later - earlier for earlier, later in zip(values, values[1:] + [rss_end])]
    return {"rss_before_each_swap_mib": marks,
            "added_by_each_swap_mib": dict(zip(marks, added)),
            "added_before_first_swap_mib": (values[0] - rss_start) if values else None}


def summarise(records: list[tuple], seconds: float) -> dict:
    """Counts, statuses, latency percentiles and the per-window timeline of one timed run."""
    valid = [r for r in records if r[2] == "valid"]
    invalid = [r for r in records if r[2] != "valid"]
    statuses: dict[str, int] = {}
    for record in records:
        statuses[str(record[3])] = statuses.get(str(record[3]), 0) + 1
    failed = [r for r in valid if r[5] is not None]
    invalid_kinds = {}
    for kind, (_, _, expected) in sorted(INVALID_REQUESTS.items()):
        mine = [r for r in invalid if r[2] == kind]
        by_status: dict[str, int] = {}
        for record in mine:
            by_status[str(record[3])] = by_status.get(str(record[3]), 0) + 1
        invalid_kinds[kind] = {"sent": len(mine), "expected_status": expected, "statuses": by_status,
                               "unexpected": sum(1 for r in mine if r[3] != expected)}
    versions: dict[str, int] = {}
    for record in valid:
        if record[4] is not None:
            versions[str(record[4])] = versions.get(str(record[4]), 0) + 1
    answered = {}  # version -> [first, last] answer (seconds into the window)
    for record in valid:
        if record[4] is not None:
            span = answered.setdefault(str(record[4]), [record[0], record[0]])
            span[0], span[1] = min(span[0], record[0]), max(span[1], record[0])
    ok_latency = [r[1] for r in valid if r[5] is None]
    timeline = []
    for start in np.arange(0.0, seconds, WINDOW_SECONDS):
        window = [r for r in valid if start <= r[0] < start + WINDOW_SECONDS]
        entry = {"start_s": float(start), "valid_requests": len(window)}
        if window:
            entry.update({key: value for key, value in latency_stats([r[1] for r in window]).items()
                          if key in ("p50_ms", "p99_ms", "max_ms")})
            entry["versions"] = sorted({r[4] for r in window if r[4] is not None})
        timeline.append(entry)
    return {
        "requests_total": len(records),
        "valid_requests": len(valid),
        "invalid_requests": len(invalid),
        "failed_valid_requests": len(failed),
        "failed_valid_examples": sorted({r[5] for r in failed})[:10],
        "statuses": dict(sorted(statuses.items())),
        "status_5xx": sum(count for status, count in statuses.items() if status.startswith("5")),
        "invalid_4xx": sum(1 for r in invalid if 400 <= r[3] < 500),
        "invalid_unexpected_status": sum(kind["unexpected"] for kind in invalid_kinds.values()),
        "invalid_kinds": invalid_kinds,
        "latency_valid": latency_stats(ok_latency) if ok_latency else None,
        "latency_invalid": latency_stats([r[1] for r in invalid]) if invalid else None,
        "throughput_rps": len(records) / seconds,
        "throughput_valid_rps": len(valid) / seconds,
        "answers_by_version": dict(sorted(versions.items())),
        "version_first_answer": min(valid, key=lambda r: r[0])[4] if valid else None,
        "version_last_answer": max(valid, key=lambda r: r[0])[4] if valid else None,
        "answers_first_last_s": dict(sorted(answered.items(), key=lambda item: int(item[0]))),
        "timeline": timeline,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 clients, 3 s, 2k items, brute force")
    parser.add_argument("--clients", type=int, help="concurrent clients (64)")
    parser.add_argument("--seconds", type=float, help="timed window (60)")
    parser.add_argument("--warmup-seconds", type=float, help="load before the timed window, not counted (5)")
    parser.add_argument("--catalog", type=int, help="items of the synthetic catalog (20000)")
    parser.add_argument("--users", type=int, help="users (user_id 1..U) (1000)")
    parser.add_argument("--clusters", type=int, help="cluster centres of the synthetic catalog (200)")
    parser.add_argument("--kind", choices=("brute_force", "scann"), help="index of both versions (scann)")
    parser.add_argument("--invalid-share", type=float, help="share of deliberately invalid requests (0.05)")
    parser.add_argument("--swap-at", type=float, help="when version 2 is written, as a share of --seconds (0.5)")
    parser.add_argument("--swaps", type=int, help="new versions written during the run (1); more than one are "
                                                  "spread evenly from --swap-at to 90 %% of the window")
    parser.add_argument("--poll-seconds", type=float, help="tfsoft serve --poll-seconds (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON result (default bench/results/serving_load.json; --quick: "
                                      "bench/results/serving_load_quick.json)")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name in settings:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    out = args.out or str(ROOT / "bench" / "results" / ("serving_load_quick.json" if args.quick else "serving_load.json"))
    seconds = float(settings["seconds"])

    started = time.perf_counter()
    payload = {
        "benchmark": "load and soak of tfsoft serve: concurrent keep-alive REST clients, top-100 requests with a "
                     "share of invalid ones, a new model version written into the base path mid-run",
        "command": "TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/bench_serving_load.py"
                   + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else ""),
        "machine": {**machine(), "scann": _version("scann"), "load_average_start": list(os.getloadavg())},
        "note": "Server (tfsoft serve, its own process) and clients (threads of this process) share the machine's "
                "CPUs. Latencies are per request from send to the end of the answer, queueing included: with "
                "closed-loop clients, latency ~ clients / throughput. Bodies are encoded before the run.",
        "parameters": {**settings, "k": REST_K, "version_item_id_offset": VERSION_ID_OFFSET,
                       "invalid_requests": {kind: {"path": request_path(suffix), "expected_status": expected,
                                                   "body_bytes": None if body is None else len(body)}
                                            for kind, (suffix, body, expected) in INVALID_REQUESTS.items()},
                       "num_versions": 1, "window_seconds": WINDOW_SECONDS},
    }
    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as scratch:
        scratch = Path(scratch)
        print(f"building versions 1..{1 + settings['swaps']} ({settings['catalog']:,} items, {settings['kind']})",
              flush=True)
        swaps = settings["swaps"]
        base, prebuilt, payload["exports"] = build_versions(scratch, settings["catalog"], settings["users"],
                                                            settings["clusters"], settings["kind"], args.seed,
                                                            versions=1 + swaps)
        server = ServeProcess(base, MODEL, scratch / "serve.log", poll_seconds=settings["poll_seconds"],
                              args=("--num-versions", "1"))
        payload["server_command"] = " ".join(server.command[:2] + ["'...'"] + server.command[3:]).replace(
            str(scratch), "<scratch>")
        with server:
            print(f"server up in {server.start_seconds:.1f}s (pid {server.pid}): {server.banner}", flush=True)
            load = LoadRun(server.port, settings["clients"], settings["users"], settings["invalid_share"], args.seed)
            load.run(settings["warmup_seconds"])
            warmup = summarise(load.records, settings["warmup_seconds"])
            time.sleep(1.0)
            rss_start = server.rss_bytes() / 2**20
            server_cpu, client_cpu = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
            print(f"warm-up: {warmup['requests_total']} requests; RSS {rss_start:.0f} MiB; timed run "
                  f"{settings['clients']} clients x {seconds:g}s", flush=True)
            monitor = Monitor(server)
            written = {}
            fractions = [settings["swap_at"]] if swaps == 1 else \
                list(np.linspace(settings["swap_at"], 0.9, swaps))

            def during(opened: float, stop_at: float) -> None:
                monitor.start(opened)
                for version, fraction in enumerate(fractions, start=2):
                    time.sleep(max(0.0, opened + fraction * seconds - time.perf_counter()))
                    begun = time.perf_counter() - opened
                    publish_copy(prebuilt / str(version), base, version)
                    written[str(version)] = {"write_started_s": begun, "published_s": time.perf_counter() - opened}
                time.sleep(max(0.0, stop_at - time.perf_counter()))

            load.run(seconds, during)
            monitor.stop()
            used = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu = (used.ru_utime + used.ru_stime) - (client_cpu.ru_utime + client_cpu.ru_stime)
            server_cpu = server.cpu_seconds() - server_cpu
            time.sleep(1.0)
            rss_end = server.rss_bytes() / 2**20
            result = summarise(load.records, seconds)
            status_seen = [(round(at, 3), versions) for at, versions in monitor.status]
            exit_code = server.stop()
            log = server.log_text()
        rss_samples = [value for _, value in monitor.rss]
        result.update({
            "clients": settings["clients"], "seconds": seconds,
            "warmup": {key: warmup[key] for key in ("requests_total", "valid_requests", "failed_valid_requests",
                                                    "status_5xx")},
            "swap": {"versions_written": written, "status_versions_seen": status_seen,
                     "status_first_shows_s": {str(version): next((at for at, v in status_seen if version in v), None)
                                              for version in range(2, swaps + 2)}},
            "memory": {"rss_start_mib": rss_start, "rss_end_mib": rss_end, "growth": rss_end / rss_start - 1,
                       "rss_max_during_mib": max(rss_samples) if rss_samples else None,
                       **swap_memory(monitor.rss, written, rss_start, rss_end),
                       "rss_samples_mib": [[round(at, 2), round(value, 1)] for at, value in monitor.rss[::4]],
                       "note": "start: server idle 1 s after the warm-up load (version 1 loaded); end: idle 1 s "
                               "after the timed run (the last version loaded, the others unloaded); VmRSS of "
                               "/proc/<pid>/status; samples every 2 s: [seconds into the window, MiB]. A swap "
                               "loads the new version while the old one still serves (both in memory), so the "
                               "end includes pages the allocator kept from that overlap; RSS between swaps "
                               "shows whether serving itself leaks (bench/results/serving_load_soak.json: "
                               "repeated swaps over a 100k-item catalog)"},
            "cpu_seconds": {"server": server_cpu, "client": client_cpu},
            "server": {"start_seconds": server.start_seconds, "exit_status_after_sigterm": exit_code,
                       "log_error_lines": sum(1 for line in log.splitlines() if " ERROR tfsoft" in line),
                       "log_error_examples": [line for line in log.splitlines() if " ERROR tfsoft" in line][:5],
                       "log_other_lines": [line for line in log.splitlines() if "tfsoft" not in line][:5],
                       "log_traceback_lines": log.count("Traceback"),
                       "log_lines": len(log.splitlines()),
                       "log_version_lines": [line.split(": ", 1)[-1] for line in log.splitlines()
                                             if "version" in line and ("available" in line or "unloaded" in line)]},
        })
        payload["result"] = result
    result = payload["result"]
    latency = result["latency_valid"] or {}
    payload["acceptance"] = checks = {
        "clients_at_least_64": result["clients"] >= 64,
        "seconds_at_least_60": result["seconds"] >= 60,
        "no_failed_valid_request": result["failed_valid_requests"] == 0,
        "no_5xx": result["status_5xx"] == 0,
        "invalid_all_4xx": result["invalid_4xx"] == result["invalid_requests"],
        "memory_growth_under_10_percent": result["memory"]["growth"] < 0.10,
        "swap_served": result["version_first_answer"] == 1 and result["version_last_answer"] == 1 + swaps,
        "p99_ms": latency.get("p99_ms"),
    }
    payload["acceptance"]["all"] = all(value for key, value in checks.items() if key != "p99_ms")
    payload["acceptance"]["scope"] = (
        "issue 17: 64 concurrent clients for >= 60 s with a version swap: 0 failed valid requests, 0 5xx, memory "
        "growth under 10 %, p99 stated" + ("" if swaps == 1 else
                                          f"; this run is a soak of {swaps} swaps, so its memory growth adds up "
                                          f"{swaps} swaps (memory.added_by_each_swap_mib) and is not the criterion"))
    payload["machine"]["load_average_end"] = list(os.getloadavg())
    payload["total_seconds"] = time.perf_counter() - started
    print(f"{result['requests_total']} requests ({result['valid_requests']} valid, {result['invalid_requests']} "
          f"invalid) in {seconds:g}s = {result['throughput_rps']:.0f}/s; failed valid {result['failed_valid_requests']}; "
          f"5xx {result['status_5xx']}; invalid 4xx {result['invalid_4xx']}; statuses {result['statuses']}")
    print(f"valid latency p50 {latency.get('p50_ms', float('nan')):.1f} ms  p95 {latency.get('p95_ms', float('nan')):.1f}"
          f"  p99 {latency.get('p99_ms', float('nan')):.1f}  max {latency.get('max_ms', float('nan')):.1f}")
    print(f"versions: first {result['version_first_answer']}, last {result['version_last_answer']}, answers "
          f"{result['answers_by_version']}; written {result['swap']['versions_written']}; answered (first, last) "
          f"{result['answers_first_last_s']}; RSS {result['memory']['rss_start_mib']:.0f} -> "
          f"{result['memory']['rss_end_mib']:.0f} MiB ({100 * result['memory']['growth']:+.1f} %); acceptance "
          f"{'PASS' if checks['all'] else 'FAIL'}")
    write_result(out, payload)
    return payload


if __name__ == "__main__":
    main()
