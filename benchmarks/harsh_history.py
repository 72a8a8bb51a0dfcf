"""Synthetic deploy histories under a harsh noise model, and how often the findings are wrong.

Each history is written straight into a SQLite store (no HTTP, for speed; the profiles folded
by the agent's own :class:`~flamewatch.sampler.folding.StackFolder`), then read back with
:func:`~flamewatch.reports.findings.find_changes`, the function the report, ``flamewatch
changes`` and ``flamewatch check`` share.

**The shop.** Four versions, each deployed for a day; eight endpoints; ten users. Every view
runs ``load_page`` and one function of its own (``work_<endpoint>``), and both reach their time
through one shared helper, ``query`` -- as real views reach ``json.dumps`` or a driver call.

**The noise.**

- Heavy tails: each request's durations times a log-normal factor (sigma 0.3), and 1 % of the
  requests 20 times slower.
- A slow drift within each version: per endpoint and version, durations drift linearly by up
  to +-10 % from the deploy to the next one.
- Load bursts: eight one-minute bursts a day in which every endpoint is three times slower.
- Users with very different request counts: per endpoint and version, from 160 requests
  (``u0``) down to 4 (``u9``), 455 in all.

**The planted changes** (each a change of the median request of at least 1.5 times, at most 3;
drawn per history):

- one endpoint slower from a random version on, for everyone, because its own function is;
- another faster from a random version on, for everyone;
- another slower from a random version on for one user only (one of the five busiest, with 30
  requests or more per version);
- another slower from a random hour (the 8th to the 16th) of a random version on, for
  everyone: a change inside a version (data growth), which carries into later versions.

**Counted.** A *comparison* is each test the findings make that could flag something: each
endpoint's versions next to each other, each user's (with enough requests in both) against the
others', and each endpoint-version's hours (a change inside it). A finding that is not a planted
change is a false finding; a planted change without its finding is missed; a planted version
change whose finding's first call path is not ``view -> work_<endpoint> -> query`` is blamed on
the wrong code.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

from flamewatch.reports.aggregate import MIN_CHANGE_REQUESTS, ReportData
from flamewatch.reports.findings import Finding, find_changes
from flamewatch.reports.flames import FlameReport
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.folding import StackFolder
from flamewatch.sampler.inflight import Sample, Stack
from flamewatch.sampler.store import ProcessInfo, RequestRecord, SQLiteStore

__all__ = ["Planted", "history_errors"]

VERSIONS = ("v1", "v2", "v3", "v4")
ENDPOINTS = ("index", "item", "feed", "orders", "search", "price", "cart", "profile")
USERS = tuple(f"u{n}" for n in range(10))
REQUESTS = (160, 100, 70, 45, 30, 20, 12, 8, 6, 4)  # per user, endpoint and version
DAY_S = 86_400.0
START = 1_780_000_000.0 // 3600 * 3600  # the first deploy, at the start of an hour
BURSTS_PER_DAY = 8
BURST_S, BURST_FACTOR = 60.0, 3.0
SIGMA, TAIL_SHARE, TAIL_FACTOR, DRIFT = 0.3, 0.01, 20.0, 0.1
MS = 1_000_000  # ns


def _code(name: str) -> CodeType:
    namespace: dict[str, Any] = {}
    exec(compile(f"def {name}():\n    pass\n", "/app/shop.py", "exec"), namespace)
    code: CodeType = namespace[name].__code__
    return code


_ENTRY = _code("entry")
_QUERY = _code("query")
_LOAD = _code("load_page")
_VIEWS = {e: _code(e) for e in ENDPOINTS}
_WORK = {e: _code(f"work_{e}") for e in ENDPOINTS}
BASE_LOAD_MS, BASE_WORK_MS, VIEW_MS = 3.0, 4.0, 0.3


@dataclass(frozen=True)
class Planted:
    """A change put into a history: (endpoint, version, verdict, group) and its kind."""

    endpoint: str
    version: str
    verdict: str
    group: str | None
    ratio: float  # of the whole request's median
    hour: int | None = None  # a change inside the version: from this hour of it

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        return (self.endpoint, self.version, self.verdict, self.group)


def plant(rng: random.Random) -> list[Planted]:
    slower, faster, mine, inside = rng.sample(ENDPOINTS, 4)
    return [
        Planted(slower, rng.choice(VERSIONS[1:]), "slower", None, rng.uniform(1.5, 3.0)),
        Planted(faster, rng.choice(VERSIONS[1:]), "faster", None, 1 / rng.uniform(1.5, 3.0)),
        Planted(
            mine, rng.choice(VERSIONS[1:]), "slower", rng.choice(USERS[:5]), rng.uniform(1.5, 3.0)
        ),
        Planted(
            inside, rng.choice(VERSIONS), "slower", None, rng.uniform(1.5, 3.0), rng.randint(8, 16)
        ),
    ]


def _work_ms(endpoint: str, version: str, user: str, at: float, planted: list[Planted]) -> float:
    """The ms of the endpoint's own function, before noise: grown so the whole request's
    median moves by the planted ratio."""
    base = VIEW_MS + BASE_LOAD_MS + BASE_WORK_MS
    work = BASE_WORK_MS
    place = VERSIONS.index(version)
    for p in planted:
        if p.endpoint != endpoint or (p.group is not None and p.group != user):
            continue
        since = VERSIONS.index(p.version)
        started = place > since or (place == since and (p.hour is None or at >= p.hour * 3600))
        if started:
            work += base * (p.ratio - 1)
    return work


def sampled(parts: Iterable[tuple[Stack, float]], factor: float) -> tuple[list[Sample], float]:
    """What a 1 ms sampler records of a request that spends ``ms * factor`` in each of the
    ``parts``' stacks in turn, and the request's duration in ms: the synthetic profiles of
    every history here and of :mod:`bench_flames`."""
    samples: list[Sample] = []
    t = 0.0
    for stack, ms in parts:
        end = t + ms * factor
        due = math.floor(t) + 1
        while due <= end:  # a 1 ms sampler finds it there
            samples.append((due * MS, MS, stack))
            due += 1
        t = end
    return samples, t


def get_request(endpoint: str, at: float, duration_ms: float, user: str) -> RequestRecord:
    """A successful GET of ``/endpoint`` by ``user``, not an outlier, as the writer stores it."""
    return RequestRecord(
        endpoint, f"/{endpoint}", "GET", 200, at, duration_ms, user, None, False, None
    )


def write_history(path: Path, seed: int) -> list[Planted]:
    """One history in a new SQLite store; its planted changes."""
    rng = random.Random(seed)
    planted = plant(rng)
    bursts = sorted(
        rng.uniform(0, DAY_S * len(VERSIONS)) for _ in range(BURSTS_PER_DAY * len(VERSIONS))
    )
    store = SQLiteStore(path)
    store.open()
    try:
        for place, version in enumerate(VERSIONS):
            process = store.register_process(ProcessInfo("h", 1, version, "bench", 0.0, "b"))
            folder = StackFolder(entry_code=_ENTRY)
            records = []
            for endpoint in ENDPOINTS:
                drift = rng.uniform(-DRIFT, DRIFT)
                view: Stack = ((_ENTRY, 1), (_VIEWS[endpoint], 1))
                for user, count in zip(USERS, REQUESTS, strict=True):
                    for _ in range(count):
                        at = rng.uniform(0, DAY_S)  # seconds into the version
                        when = place * DAY_S + at
                        factor = math.exp(rng.gauss(0, SIGMA)) * (1 + drift * at / DAY_S)
                        if rng.random() < TAIL_SHARE:
                            factor *= TAIL_FACTOR
                        if any(b <= when < b + BURST_S for b in bursts):
                            factor *= BURST_FACTOR
                        work = _work_ms(endpoint, version, user, at, planted)
                        parts = [
                            (view, VIEW_MS),
                            ((*view, (_LOAD, 1), (_QUERY, 1)), BASE_LOAD_MS),
                            ((*view, (_WORK[endpoint], 1), (_QUERY, 1)), work),
                        ]
                        samples, t = sampled(parts, factor)
                        folder.fold(endpoint, user, samples, 0)
                        records.append(get_request(endpoint, START + when, t, user))
            store.write_requests(process, records)
            store.write_profiles(process, folder.drain())
    finally:
        store.close()
    return planted


def comparisons(planted: list[Planted]) -> int:
    """The comparisons of a history that could flag something, less the planted ones."""
    groups = sum(1 for n in REQUESTS if n >= MIN_CHANGE_REQUESTS)
    pairs = len(VERSIONS) - 1
    per_endpoint = pairs * (1 + groups) + len(VERSIONS)
    return len(ENDPOINTS) * per_endpoint - len(planted)


def history_errors(path: Path, seed: int) -> dict[str, Any]:
    """Write one history, find its changes, count what went wrong."""
    planted = write_history(path, seed)
    with open_readonly(str(path)) as conn:
        found = find_changes(conn, FlameReport(conn, ReportData(conn)))
    by_key: dict[tuple[str, str, str, str | None], Finding] = {}
    for f in found:
        by_key.setdefault((f.endpoint, f.version, f.verdict, f.group), f)
    wanted = {p.key: p for p in planted}
    false = [f for f in found if (f.endpoint, f.version, f.verdict, f.group) not in wanted]
    missed = [p for p in planted if p.key not in by_key]
    wrong = []
    blamed = 0
    for p in planted:
        f = by_key.get(p.key)
        if f is None or p.hour is not None:
            continue  # missed, or inside a version (no profile per hour: no path to name)
        blamed += 1
        names = f.paths[0].names if f.paths else []
        if names != [p.endpoint, f"work_{p.endpoint}", "query"]:
            wrong.append((p, names))
    return {
        "planted": planted,
        "comparisons": comparisons(planted),
        "false": false,
        "missed": missed,
        "blamed": blamed,
        "wrong_culprit": wrong,
    }
