"""Stores of 10^5 to 10^7 requests written through the writer's real code path, for bench_scale.

The requests are :mod:`synthetic_store`'s draws (the same plan, timestamps, log-normal
durations, Zipf-like endpoint and user traffic, planted regressions), but no row is inserted
around flamewatch: each draw becomes the record a request thread builds
(:func:`flamewatch.sampler.inflight.new_record`, status and group filled in, threshold read from
the recorder as the hooks do) and ends through :meth:`Recorder.end` -- which flags it an outlier
against the published threshold and queues the tuple -- then a
:class:`~flamewatch.sampler.writer.Writer` per process drains it into
:meth:`Store.write_requests`, seeding, publishing thresholds and (once the writer fills them)
the latency histograms on the way. So whatever the writer stores, these stores hold.

The mix (:data:`MIX`): 20 endpoints, 12 versions over 180 days, two processes per version
(24 pids on hosts ``web-1`` and ``web-2``), each process registered with its version's deploy
time; 30 users of very different traffic as groups, and 4 % of requests from 3 addresses the
app knows no user of (their address is the group, as the writer does); statuses 97 % 200,
2 % 404, 1 % 500. Outliers are flagged by the real outlier rule but captured without a profile
(no capturer): the stores measure rows and histograms, not profiles.

Records are queued :data:`CHUNK` at a time, then every live writer is flushed; a version's
processes are stopped when the next version's first request comes. The clock the writer reads
is the real one: a record's start is given as the ``perf_counter_ns`` of its synthetic time.
The processes' heartbeats are wall-clock times of the build; after it they are set to the
process's last request, as a real process's would be.

A built store is cached as ``scale-<requests>-<fingerprint>.sqlite3`` in the cache directory
with a JSON file of how it was built beside it. The fingerprint hashes the sources of
``flamewatch.sampler`` and of the generators, so a store made by other writer code is never
reused for this code's figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flamewatch.sampler
from flamewatch.sampler import Recorder, Writer
from flamewatch.sampler.inflight import GROUP, STATUS, new_record
from flamewatch.sampler.stats import OutlierRule
from flamewatch.sampler.store import ProcessInfo, RouteInfo, SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_store import (
    PROCESSES_PER_VERSION,
    Plan,
    client_ip,
    draw_requests,
    make_plan,
    process_host,
    process_of,
)

__all__ = ["BUSIEST_ENDPOINT", "CHUNK", "MIX", "cached_store", "fingerprint"]

MIX: dict[str, int] = {"endpoints": 20, "versions": 12, "users": 30, "days": 180, "seed": 1}
CHUNK = 20_000  # records queued between two flushes of the writers (~10,000 per process)
ANONYMOUS = 3  # addresses whose requests carry no user
#: synthetic_store's first endpoint, the most requested one (its traffic is Zipf-like)
BUSIEST_ENDPOINT = "users.list"
AGENT = "flamewatch (bench_scale) / Python"
RULE = OutlierRule()
FLUSH_TIMEOUT_S = 600.0

Progress = Callable[[int, int, float], None]  # (requests written, of, seconds so far)


def fingerprint() -> str:
    """A short hash of what decides a store's contents: the sampler's sources (writer, store,
    histograms, ...), the generators' sources and the mix."""
    digest = hashlib.sha256(json.dumps([MIX, CHUNK, ANONYMOUS]).encode())
    sampler = Path(flamewatch.sampler.__file__).parent
    here = Path(__file__).parent
    files = [*sorted(sampler.rglob("*.py")), here / "synthetic_store.py", Path(__file__)]
    for path in files:
        digest.update(str(path.relative_to(path.parent.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def cached_store(directory: Path, requests: int, progress: Progress) -> tuple[Path, dict[str, Any]]:
    """The store of ``requests`` requests in ``directory``, built first unless it is there;
    and how it was built (requests, seconds, rate, fingerprint)."""
    name = f"scale-{requests}-{fingerprint()}"
    path, info_path = directory / f"{name}.sqlite3", directory / f"{name}.json"
    if path.exists() and info_path.exists():
        info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        return path, {**info, "reused": True}
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{name}.partial.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    began = time.perf_counter()
    build(partial, requests, progress)
    seconds = time.perf_counter() - began
    os.replace(partial, path)
    info = {
        "requests": requests,
        "build_s": round(seconds, 1),
        "requests_per_s": round(requests / seconds),
        "fingerprint": fingerprint(),
        "mix": MIX,
        "built_at": time.time(),
    }
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return path, {**info, "reused": False}


def _routes(plan: Plan) -> list[RouteInfo]:
    """The app's URL map, as Flask lists it: GET routes answer HEAD too, all OPTIONS."""
    routes = [
        RouteInfo(
            e.name,
            e.rule,
            ("GET", "HEAD", "OPTIONS") if e.method == "GET" else (e.method, "OPTIONS"),
        )
        for e in plan.endpoints
    ]
    return [*routes, RouteInfo("static", "/static/<path:filename>", ("GET", "HEAD", "OPTIONS"))]


class _Process:
    """One simulated app process: its recorder (the request threads' side) and its writer."""

    def __init__(self, path: Path, plan: Plan, index: int) -> None:
        version = index // PROCESSES_PER_VERSION
        host, pid = process_host(index)
        self.recorder = Recorder(2 * CHUNK, lambda endpoint: True, RULE)
        process = ProcessInfo(host, pid, plan.versions[version], "git", plan.bounds[version], AGENT)
        self.writer = Writer(
            SQLiteStore(path),
            self.recorder,
            RULE,
            process,
            flush_interval=3600.0,  # written when flushed, every CHUNK records
            sync_interval=3600.0,
        )
        self.writer.start()
        self.flush()  # opened, registered and seeded from the store before its first request
        self.pid = pid
        self.last_request = plan.bounds[version]

    def flush(self) -> None:
        if not self.writer.flush(timeout=FLUSH_TIMEOUT_S):
            raise RuntimeError("the writer could not write its records (see the log)")

    def stop(self) -> None:
        self.flush()
        self.writer.stop(FLUSH_TIMEOUT_S)


def build(path: Path, requests: int, progress: Progress) -> None:
    """Write ``requests`` requests of :data:`MIX`, ending now, into a new store at ``path``."""
    plan = make_plan(**MIX, end=time.time())
    store = SQLiteStore(path)
    store.open()  # the schema; the app's routes as its first process would record them
    store.record_routes(_routes(plan), lambda endpoint: True, plan.start)
    store.close()
    # a record's t0 is the perf_counter_ns of its synthetic start; the writer turns it back
    offset_ns = time.time_ns() - time.perf_counter_ns()
    thread_id = threading.get_ident()
    live: dict[int, _Process] = {}
    done: list[_Process] = []
    queued = 0
    began = time.perf_counter()
    try:
        for d in draw_requests(plan, requests):
            index = process_of(d.version, d.request)
            process = live.get(index)
            if process is None:  # a deploy: the older version's processes end
                for old in [i for i in live if i < PROCESSES_PER_VERSION * d.version]:
                    live[old].stop()
                    done.append(live.pop(old))
                process = live[index] = _Process(path, plan, index)
            recorder, endpoint = process.recorder, plan.endpoints[d.endpoint]
            if d.group is None:
                address, group = f"203.0.113.{d.user % ANONYMOUS + 1}", None
            else:
                address, group = client_ip(d.user), plan.users[d.user]
            # what the request thread does (flamewatch.flask_plugin.hooks)
            t0 = round(d.started_at * 1e9) - offset_ns
            threshold = recorder.thresholds_ns.get(endpoint.name)
            record = new_record(
                endpoint.name,
                endpoint.rule,
                t0,
                thread_id,
                threshold,
                method=endpoint.method,
                client_ip=address,
            )
            record[STATUS], record[GROUP] = d.status, group
            recorder.end(record, t0 + round(d.duration_ms * 1e6))
            process.last_request = d.started_at
            queued += 1
            if queued >= CHUNK:
                for running in live.values():
                    running.flush()
                queued = 0
                progress(d.request, requests, time.perf_counter() - began)
    finally:
        for process in live.values():
            process.stop()
        done += live.values()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "UPDATE processes SET last_seen = ? WHERE pid = ?",
            [(p.last_request, p.pid) for p in done],
        )
    conn.close()
    progress(requests, requests, time.perf_counter() - began)
