"""A synthetic flamewatch store of any size, with realistic traffic, written fast.

The store is real: :class:`~flamewatch.sampler.store.SQLiteStore` creates and migrates it,
then rows go in with ``executemany`` in large transactions (a million requests take seconds),
and ``flamewatch migrate``'s backfill folds them into the latency histograms.
What is in it:

* endpoints with their rules and methods, popular and rare ones (Zipf-like), each with its own
  log-normal duration (median 2..400 ms, spread 0.3..0.9), plus the never-requested
  ``static`` endpoint a Flask app always has;
* versions deployed one after the other over ``days`` days, each covering a time slice
  (``first_seen``/``last_seen`` accordingly), two processes per version; at some versions a
  few endpoints regress (1.6-3x slower) or improve (0.35-0.65x), and stay so after;
* users with skewed activity (a few do most requests), 4 % of requests without a user (the
  "unknown" group), and one active user three times slower on one endpoint;
* timestamps with a daily and weekly rhythm (busy in working hours UTC, quiet at weekends);
* the ``outliers`` slowest requests relative to their endpoint's normal duration flagged, each
  with an ``outliers`` row: request facts, CPU and memory, the stack at its threshold and a
  small gzip-compressed pyinstrument session.

The requests themselves are drawn by :func:`draw_requests` from a :class:`Plan`
(:func:`make_plan`), apart from any store: ``bench_scale.py`` feeds the same draws through the
writer's real code path instead of inserting rows.

What was planted (regressions, improvements, the slow user, ...) is the *manifest*: returned by
:func:`manifest`, stored in the ``meta`` table under ``synthetic_manifest`` and printed by the
command line::

    python benchmarks/synthetic_store.py /tmp/store.sqlite3 --requests 1000000
    python benchmarks/synthetic_store.py /tmp/store.sqlite3 --force --time-report
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import heapq
import math
import random
import resource
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pyinstrument.session import Session

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import SQLiteStore

__all__ = [
    "PROCESSES_PER_VERSION",
    "Draw",
    "Endpoint",
    "Plan",
    "client_ip",
    "draw_requests",
    "generate",
    "main",
    "make_plan",
    "manifest",
    "process_host",
    "process_of",
]

MANIFEST_KEY = "synthetic_manifest"
_AREAS = ("users", "orders", "search", "reports", "billing", "catalog", "auth", "admin")
_ACTIONS = ("list", "show", "create", "update", "delete", "export", "summary")
_METHODS = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_BATCH = 50_000  # rows per executemany
_TRANSACTION = 250_000  # rows per transaction
_HOUR = 3600.0
PROCESSES_PER_VERSION = 2  # web-1 and web-2


@dataclass(frozen=True)
class Endpoint:
    id: int
    name: str
    rule: str
    method: str
    median_ms: float
    sigma: float


def _endpoints(count: int, rng: random.Random) -> list[Endpoint]:
    result = []
    for i in range(count):
        area, action = _AREAS[i % len(_AREAS)], _ACTIONS[(i // len(_AREAS)) % len(_ACTIONS)]
        suffix = "" if i < len(_AREAS) * len(_ACTIONS) else f"_{i // (len(_AREAS) * len(_ACTIONS))}"
        rule = f"/{area}/{action}{suffix}" + ("/<int:id>" if action in ("show", "update") else "")
        result.append(
            Endpoint(
                id=i + 1,
                name=f"{area}.{action}{suffix}",
                rule=rule,
                method=_METHODS.get(action, "GET"),
                median_ms=math.exp(rng.uniform(math.log(2), math.log(400))),
                sigma=rng.uniform(0.3, 0.9),
            )
        )
    return result


def _hour_weights(start: float, hours: int) -> list[float]:
    """Relative traffic of each hour: busy 8-18 UTC on weekdays, quiet at night and weekends."""
    weights = []
    for h in range(hours):
        t = time.gmtime(start + h * _HOUR)
        daily = 0.12 + math.exp(-(((t.tm_hour + 0.5 - 13) / 3.5) ** 2))
        weights.append(daily * (0.35 if t.tm_wday >= 5 else 1.0))
    return weights


def _session(
    rng: random.Random, endpoint: Endpoint, duration_ms: float, started_at: float, slow: bool
) -> tuple[bytes, int, list[str]]:
    """A small real pyinstrument session of one outlier, gzip-compressed; its sample count and
    the stack it had when it crossed its threshold."""
    area, _, action = endpoint.name.partition(".")
    root = f"MainThread\x00<thread>\x00{rng.randrange(139_000_000_000_000, 140_000_000_000_000)}"
    stem = [
        root,
        "wsgi_app\x00/srv/app/.venv/lib/python3.11/site-packages/flask/app.py\x001478",
        "dispatch_request\x00/srv/app/.venv/lib/python3.11/site-packages/flask/app.py\x00865",
        f"{action}\x00/srv/app/{area}/views.py\x00{rng.randrange(20, 300)}",
    ]
    leaves = [
        [
            "load\x00/srv/app/db.py\x0042",
            "execute\x00/srv/app/.venv/lib/sqlalchemy/base.py\x001412",
        ],
        [f"serialize\x00/srv/app/{area}/schema.py\x0077"],
        ["render\x00/srv/app/templates.py\x0018"],
    ]
    if slow:
        leaves.append([f"slow_path\x00/srv/app/{area}/logic.py\x00{rng.randrange(10, 90)}"])
    shares = [
        rng.random() + (2.0 if slow and i == len(leaves) - 1 else 0) for i in range(len(leaves))
    ]
    total_s = duration_ms / 1000
    records = [
        ([*stem, *leaf], total_s * share / sum(shares))
        for leaf, share in zip(leaves, shares, strict=True)
    ]
    samples = max(1, int(duration_ms / 1.5))
    session = Session(
        frame_records=records,
        start_time=started_at,
        duration=total_s,
        min_interval=0.001,
        max_interval=0.01,
        sample_count=samples,
        start_call_stack=[root],
        target_description=f"{endpoint.method} {endpoint.rule} ({endpoint.name})",
        cpu_time=total_s * rng.uniform(0.3, 0.95),
        sys_path=["/srv/app"],
        sys_prefixes=["/srv/app/.venv"],
    )
    profile = gzip.compress(orjson.dumps(session.to_json()), compresslevel=6)
    return profile, samples, records[-1][0]


@dataclass
class Plan:
    """What the store will hold, drawn from the seed before any row is written."""

    rng: random.Random
    start: float
    end: float
    endpoints: list[Endpoint]
    bounds: list[float]  # version v covers bounds[v] .. bounds[v + 1]
    versions: list[str]
    factor: list[list[float]]  # factor[e][v] multiplies endpoint e's durations in version v
    planted: list[dict[str, Any]]
    regressed_from: dict[int, int]  # endpoint -> the version its regression starts at
    users: list[str]
    slow_user: int
    slow_endpoint: int


def make_plan(
    *, endpoints: int, versions: int, users: int, days: int, seed: int, end: float
) -> Plan:
    """The endpoints, versions, users and planted changes of a store ending at ``end``."""
    rng = random.Random(seed)
    start = end - days * 86_400
    eps = _endpoints(endpoints, rng)
    cuts = list(accumulate(rng.uniform(0.5, 1.5) for _ in range(versions)))
    bounds = [start + (end - start) * c / cuts[-1] for c in [0.0, *cuts]]
    names = [f"{rng.getrandbits(48):012x}" for _ in range(versions)]
    factor = [[math.exp(rng.gauss(0, 0.03)) for _ in range(versions)] for _ in eps]  # noise
    planted, regressed_from = [], {}
    chosen = rng.sample(range(len(eps)), min(len(eps), 2 * max(1, endpoints // 10)))
    for n, e in enumerate(chosen):
        kind = "regression" if n % 2 == 0 else "improvement"
        at = rng.randrange(1, versions) if versions > 1 else 0
        change = rng.uniform(1.6, 3.0) if kind == "regression" else rng.uniform(0.35, 0.65)
        for v in range(at, versions):
            factor[e][v] *= change
        if kind == "regression":
            regressed_from[e] = at
        planted.append(
            {
                "kind": kind,
                "endpoint": eps[e].name,
                "version": names[at],
                "previous": names[at - 1] if at else None,
                "factor": round(change, 3),
            }
        )
    return Plan(
        rng=rng,
        start=start,
        end=end,
        endpoints=eps,
        bounds=bounds,
        versions=names,
        factor=factor,
        planted=planted,
        regressed_from=regressed_from,
        users=[f"user-{u:03d}" for u in range(1, users + 1)],
        slow_user=1 if users > 1 else 0,
        slow_endpoint=rng.randrange(len(eps)),
    )


def generate(
    path: Path,
    *,
    requests: int = 1_000_000,
    endpoints: int = 50,
    versions: int = 20,
    users: int = 200,
    outliers: int = 500,
    days: int = 60,
    seed: int = 1,
    end: float | None = None,
) -> Path:
    """Create a synthetic store at ``path`` (which must not exist); see the module docstring.

    ``end`` is the time of the last request (default: now), so "last day" has traffic.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; give a new path (or delete it first)")
    plan = make_plan(
        endpoints=endpoints,
        versions=versions,
        users=users,
        days=days,
        seed=seed,
        end=time.time() if end is None else end,
    )
    store = SQLiteStore(path)
    store.open()  # creates the schema
    began = time.perf_counter()
    try:
        conn = store.conn
        _write_catalog(conn, plan)
        worst = _write_requests(conn, plan, requests, outliers)
        _write_outliers(conn, plan, worst)
        _fold_histograms(conn, path)
        info = {
            "path": str(path),
            "requests": requests,
            "endpoints": [e.name for e in plan.endpoints],
            "idle_endpoint": "static",
            "versions": plan.versions,
            "users": users,
            "outliers": len(worst),
            "start": plan.start,
            "end": plan.end,
            "seed": seed,
            "changes": plan.planted,
            "slow_user": {
                "user": plan.users[plan.slow_user],
                "endpoint": plan.endpoints[plan.slow_endpoint].name,
                "factor": 3.0,
            },
            "seconds": round(time.perf_counter() - began, 2),
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            (MANIFEST_KEY, orjson.dumps(info).decode()),
        )
    finally:
        store.close()
    return path


def _fold_histograms(conn: sqlite3.Connection, path: Path) -> None:
    """The latency histograms of the rows just inserted. They went in around the writer, so
    they are marked as written before the histograms (as migrating an older store marks
    them) and folded by ``flamewatch migrate``'s own backfill, groups capped alike. Imported
    here: bench_reads imports this module under a flamewatch older than the histograms."""
    from flamewatch.sampler.store.backfill import (  # noqa: PLC0415 -- see the docstring
        backfill_histograms,
        mark_backfill,
    )
    from flamewatch.sampler.store.connection import (  # noqa: PLC0415 -- see the docstring
        StoreConnection,
    )

    mark_backfill(conn.execute, lambda statement: statement)
    backfill_histograms(StoreConnection.wrap(conn, str(path)))


def _write_catalog(conn: sqlite3.Connection, plan: Plan) -> None:
    """Versions, endpoints (and the idle ``static``), rules, users and processes."""
    start, end, bounds, eps = plan.start, plan.end, plan.bounds, plan.endpoints
    idle = len(eps) + 1
    methods = {"GET": "GET,HEAD,OPTIONS"}
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO versions (id, name, source, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
        [(v + 1, name, "git", bounds[v], bounds[v + 1]) for v, name in enumerate(plan.versions)],
    )
    conn.executemany(
        "INSERT INTO endpoints (id, name, monitored, first_seen, last_seen) VALUES (?, ?, 1, ?, ?)",
        [(e.id, e.name, start, end) for e in eps] + [(idle, "static", start, end)],
    )
    conn.executemany(
        "INSERT INTO rules (id, endpoint_id, rule, methods, first_seen, last_seen)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (e.id, e.id, e.rule, methods.get(e.method, f"{e.method},OPTIONS"), start, end)
            for e in eps
        ]
        + [(idle, idle, "/static/<path:filename>", "GET,HEAD,OPTIONS", start, end)],
    )
    conn.executemany(
        "INSERT INTO user_groups (id, name) VALUES (?, ?)", list(enumerate(plan.users, start=1))
    )
    conn.executemany(
        "INSERT INTO processes (id, hostname, pid, version_id, agent, started_at, last_seen)"
        " VALUES (?, ?, ?, ?, 'flamewatch 0.1.0 / Python 3.11.7', ?, ?)",
        [
            (p + 1, *process_host(p), v + 1, bounds[v], bounds[v + 1])
            for v in range(len(plan.versions))
            for p in range(PROCESSES_PER_VERSION * v, PROCESSES_PER_VERSION * (v + 1))
        ],
    )
    conn.execute("COMMIT")


class Draw(NamedTuple):
    """One request drawn from a :class:`Plan`, before any store sees it."""

    request: int  # 1-based, in time order
    endpoint: int  # index in ``plan.endpoints``
    version: int  # index in ``plan.versions``
    user: int  # index in ``plan.users``: who sent it (its client address), with or without...
    group: int | None  # ...being known to the app: ``user + 1``, or None (4 % of requests)
    status: int
    started_at: float
    duration_ms: float
    normal_ms: float  # the endpoint's median in this version (before the slow user's factor)


def draw_requests(plan: Plan, requests: int) -> Iterator[Draw]:
    """The ``requests`` requests of ``plan``, hour by hour in time order (so ids follow time).

    Draws from ``plan.rng``: the same plan and count always give the same requests.
    """
    rng, eps, start, end = plan.rng, plan.endpoints, plan.start, plan.end
    hours = max(1, math.ceil((end - start) / _HOUR))
    per_hour = [0] * hours
    weights = list(accumulate(_hour_weights(start, hours)))
    for h in rng.choices(range(hours), cum_weights=weights, k=requests):
        per_hour[h] += 1
    cum_endpoints = list(accumulate(1 / (i + 1) ** 0.8 for i in range(len(eps))))
    cum_users = list(accumulate(1 / (i + 1) ** 1.1 for i in range(len(plan.users))))
    last_version = len(plan.versions) - 1
    request_id = 0
    for h, count in enumerate(per_hour):
        hour_start = start + h * _HOUR
        stamps = sorted(min(hour_start + rng.random() * _HOUR, end) for _ in range(count))
        picks = rng.choices(range(len(eps)), cum_weights=cum_endpoints, k=count)
        who = rng.choices(range(len(plan.users)), cum_weights=cum_users, k=count)
        for started_at, e, u in zip(stamps, picks, who, strict=True):
            request_id += 1
            v = min(bisect.bisect_right(plan.bounds, started_at) - 1, last_version)
            endpoint = eps[e]
            normal = endpoint.median_ms * plan.factor[e][v]
            slow = 3.0 if (u, e) == (plan.slow_user, plan.slow_endpoint) else 1.0
            duration = round(normal * slow * math.exp(rng.gauss(0.0, endpoint.sigma)), 3)
            group = None if rng.random() < 0.04 else u + 1  # 4 % without a user
            roll = rng.random()
            status = 200 if roll < 0.97 else (404 if roll < 0.99 else 500)
            yield Draw(request_id, e, v, u, group, status, started_at, duration, normal)


def process_of(version: int, request: int) -> int:
    """The 0-based index of the process that served a request: two per version, alternating."""
    return PROCESSES_PER_VERSION * version + (request & 1)


def process_host(process: int) -> tuple[str, int]:
    """The host name and pid of the process at ``process`` (see :func:`process_of`)."""
    return f"web-{process % PROCESSES_PER_VERSION + 1}", 1000 + process


def client_ip(user: int) -> str:
    """The address a user's requests come from."""
    return f"10.0.{user // 250}.{user % 250 + 1}"


# relative slowness, request id, endpoint, version, group id, status, duration, start
_Worst = tuple[float, int, int, int, "int | None", int, float, float]


def _write_requests(
    conn: sqlite3.Connection, plan: Plan, requests: int, outliers: int
) -> list[_Worst]:
    """Insert the requests; return the ``outliers`` ones slowest relative to their endpoint's
    normal duration in their version."""
    worst: list[_Worst] = []
    last_accessed = [0.0] * len(plan.endpoints)
    batch: list[tuple[Any, ...]] = []
    conn.execute("BEGIN")
    for d in draw_requests(plan, requests):
        endpoint = plan.endpoints[d.endpoint]
        batch.append(
            (
                d.request,
                endpoint.id,
                endpoint.id,  # its rule
                d.version + 1,
                d.group,
                process_of(d.version, d.request) + 1,
                endpoint.method,
                d.status,
                d.started_at,
                d.duration_ms,
                client_ip(d.user),
            )
        )
        last_accessed[d.endpoint] = d.started_at
        item = (
            d.duration_ms / d.normal_ms,
            d.request,
            d.endpoint,
            d.version,
            d.group,
            d.status,
            d.duration_ms,
            d.started_at,
        )
        if len(worst) < outliers:
            heapq.heappush(worst, item)
        elif outliers and item > worst[0]:
            heapq.heapreplace(worst, item)
        if len(batch) >= _BATCH:
            _insert_requests(conn, batch)
            batch = []
            if d.request % _TRANSACTION < _BATCH:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
    _insert_requests(conn, batch)
    conn.executemany(
        "UPDATE endpoints SET last_accessed = ? WHERE id = ?",
        [(t, e + 1) for e, t in enumerate(last_accessed) if t],
    )
    conn.execute("COMMIT")
    return sorted(worst, reverse=True)


def _write_outliers(conn: sqlite3.Connection, plan: Plan, worst: list[_Worst]) -> None:
    """Flag the worst requests as outliers, each with its facts, load and profile."""
    rng, rows, flags = plan.rng, [], []
    for rank, (_, rid, e, v, group, status, duration, started_at) in enumerate(worst):
        ep = plan.endpoints[e]
        host, pid = process_host(process_of(v, rid))
        normal_limit = ep.median_ms * math.exp(2.5 * ep.sigma) * plan.factor[e][v]
        threshold = round(min(normal_limit, 0.8 * duration), 3)
        flags.append((threshold, rid))
        regressed = v >= plan.regressed_from.get(e, len(plan.versions))
        profile, samples, crossed = _session(rng, ep, duration, started_at, regressed)
        request = {
            "endpoint": ep.name,
            "rule": ep.rule,
            "method": ep.method,
            "status": status,
            "duration_ms": duration,
            "threshold_ms": threshold,
            "group": None if group is None else plan.users[group - 1],
            "version": plan.versions[v],
            "host": host,
            "pid": pid,
            "path": ep.rule.replace("<int:id>", str(rng.randrange(1, 10_000))),
            "query": [["page", str(rank % 7 + 1)], ["sort", "date"]],
            "headers": [["User-Agent", "Mozilla/5.0"], ["Authorization", "[redacted]"]],
        }
        resources = {
            "rss_bytes": rng.randrange(120, 900) * 2**20,
            "available_bytes": rng.randrange(2, 30) * 2**30,
            "threads": rng.randrange(4, 40),
            "cpu_count": 8,
            "load_average": [round(rng.uniform(0.2, 6), 2) for _ in range(3)],
            "cpu_span_s": round(duration / 1000 + rng.uniform(0, 0.5), 3),
            "system_cpu_percent": round(rng.uniform(5, 95), 1),
            "process_cpu_percent": round(rng.uniform(10, 100), 1),
        }
        rows.append(
            (
                rid,
                orjson.dumps(request).decode(),
                orjson.dumps(resources).decode(),
                orjson.dumps(crossed).decode(),
                profile,
                len(profile),
                samples,
            )
        )
    conn.execute("BEGIN")
    conn.executemany("UPDATE requests SET is_outlier = 1, threshold_ms = ? WHERE id = ?", flags)
    conn.executemany(
        "INSERT INTO outliers (request_id, request_json, resources_json, threshold_stack_json,"
        " profile, profile_bytes, sample_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")


def _insert_requests(conn: sqlite3.Connection, batch: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO requests (id, endpoint_id, rule_id, version_id, group_id, process_id,"
        " method, status, started_at, duration_ms, client_ip) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        batch,
    )


def manifest(path: Path) -> dict[str, Any]:
    """What :func:`generate` planted in the store at ``path``."""
    conn = sqlite3.connect(path)
    try:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = ?", (MANIFEST_KEY,)).fetchone()
    finally:
        conn.close()
    result: dict[str, Any] = orjson.loads(value)
    return result


def time_report(path: Path) -> dict[str, float]:
    """Seconds each :class:`~flamewatch.reports.aggregate.ReportData` method takes, in the order
    the site builder calls them (later methods reuse what earlier ones computed)."""
    timings: dict[str, float] = {}
    with open_readonly(str(path)) as conn:
        data = ReportData(conn)
        for method in (
            "endpoints",
            "versions",
            "changes",
            "hourly_hits",
            "box_by_endpoint",
            "boxes_by_version",
            "boxes_by_group",
            "boxes_by_group_version",
            "outlier_counts",
        ):
            t0 = time.perf_counter()
            getattr(data, method)()
            timings[method] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(sum(timings.values()), 3)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the store file to create")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--outliers", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument(
        "--time-report",
        action="store_true",
        help="time ReportData on OUT (generating it first unless it exists) and report this"
        " process's peak RSS; run it on an existing store for a clean figure",
    )
    args = parser.parse_args(argv)
    if args.force:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.out}{suffix}").unlink(missing_ok=True)
    if not (args.time_report and args.out.exists()):
        t0 = time.perf_counter()
        generate(
            args.out,
            requests=args.requests,
            endpoints=args.endpoints,
            versions=args.versions,
            users=args.users,
            outliers=args.outliers,
            days=args.days,
            seed=args.seed,
        )
        elapsed = time.perf_counter() - t0
        text = orjson.dumps(manifest(args.out), option=orjson.OPT_INDENT_2).decode()
        sys.stdout.write(f"{text}\ngenerated {args.requests} requests in {elapsed:.1f} s\n")
    if args.time_report:
        timings = time_report(args.out)
        for name, seconds in timings.items():
            sys.stdout.write(f"  {name:<24} {seconds:8.3f} s\n")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        sys.stdout.write(f"  peak RSS of this process: {peak:.0f} MiB\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
