"""Latency histograms and traffic counts, folded from requests and added to the store in the
same transaction as the requests themselves.

A batch of requests (or, for the backfill, a range of stored rows) is first folded into
*cells*: one per (endpoint, version, process, group, method, status, UTC hour, bucket), with
its count, the sum of its durations and its outliers. Each cell then adds to the four tables of
schema v4 (:mod:`.schema`): ``latency`` (endpoint, version, group, bucket), ``latency_hourly``
(endpoint, version, hour, bucket), ``latency_total`` (endpoint, method, status, bucket) and
``traffic`` (endpoint, version, process, hour, method, status), and to the six coarser ones
of schema v5, which the views read so that what they read stays small however long the store
runs: ``latency_version`` (endpoint, version, bucket: ``latency`` without groups),
``group_hits`` (endpoint, version, group: ``latency`` without buckets), ``latency_daily``
(endpoint, version, UTC day, bucket), ``traffic_daily`` (endpoint, version, day),
``hits_hourly`` (endpoint, hour) and ``process_hits`` (process, day). Cells are few -- a
batch's requests share a version, a process and usually an hour -- so the per-cell Python work
(a dict key per table) costs little next to the per-request work of the fold.

The ingest path and the backfill share :class:`HistogramDeltas` and :class:`GroupCap`, so a
store backfilled from its rows holds the same tables as one written by the ingest path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from flamewatch.sampler.histogram import GAMMA, MIN_MS, bucket_of

__all__ = [
    "INV_LOG_GAMMA",
    "MIN_BUCKET",
    "NO_GROUP",
    "OTHERS",
    "Cell",
    "GroupAdmission",
    "GroupCap",
    "HistogramDeltas",
    "day_of",
    "fold_cells",
    "hour_of",
    "upsert_histograms",
]

_K = TypeVar("_K")
_N = TypeVar("_N", int, float)

#: the ``group_id`` of requests without a group
NO_GROUP = 0
#: the ``group_id`` of the groups beyond the cap of an (endpoint, version)
OTHERS = -1

#: what :func:`~flamewatch.sampler.histogram.bucket_of` multiplies ``log(ms)`` by, for the
#: writer's loop to compute a bucket without a call (the same float, so the same bucket)
INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
#: the bucket of every duration at or below :data:`~flamewatch.sampler.histogram.MIN_MS`
MIN_BUCKET = bucket_of(MIN_MS)

#: (endpoint, version) pairs whose admitted groups are kept in memory, at most (then the
#: cache starts afresh, seeded again from the store)
MAX_CACHED_PAIRS = 10_000


def hour_of(started_at: float) -> int:
    """Unix time of the start of the UTC hour of a Unix time."""
    return int(started_at // 3600) * 3600


def day_of(hour: int) -> int:
    """Unix time of the start of the UTC day of an hour's start (what the migration computes
    in SQL as ``hour / 86400 * 86400``)."""
    return hour - hour % 86_400


class _Cursor(Protocol):
    def execute(self, query: str, params: Any = ..., /) -> Any: ...

    def executemany(self, query: str, params_seq: Any, /) -> Any: ...


# The upserts of the four tables, in SQL that SQLite (>= 3.24) and PostgreSQL both run, with
# ``?`` placeholders. Counts add: a row's count is the sum of every batch's delta.
UPSERT_LATENCY = (
    "INSERT INTO latency (endpoint_id, version_id, group_id, bucket, count)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, group_id, bucket)"
    " DO UPDATE SET count = latency.count + excluded.count"
)
UPSERT_LATENCY_HOURLY = (
    "INSERT INTO latency_hourly (endpoint_id, version_id, hour, bucket, count)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, hour, bucket)"
    " DO UPDATE SET count = latency_hourly.count + excluded.count"
)
UPSERT_LATENCY_TOTAL = (
    "INSERT INTO latency_total (endpoint_id, method, status, bucket, count, sum_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, method, status, bucket)"
    " DO UPDATE SET count = latency_total.count + excluded.count,"
    " sum_ms = latency_total.sum_ms + excluded.sum_ms"
)
UPSERT_TRAFFIC = (
    "INSERT INTO traffic (endpoint_id, version_id, process_id, hour, method, status, hits,"
    " outliers, sum_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (endpoint_id, version_id, process_id, hour, method, status)"
    " DO UPDATE SET hits = traffic.hits + excluded.hits,"
    " outliers = traffic.outliers + excluded.outliers, sum_ms = traffic.sum_ms + excluded.sum_ms"
)
UPSERT_LATENCY_VERSION = (
    "INSERT INTO latency_version (endpoint_id, version_id, bucket, count)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, bucket)"
    " DO UPDATE SET count = latency_version.count + excluded.count"
)
UPSERT_GROUP_HITS = (
    "INSERT INTO group_hits (endpoint_id, version_id, group_id, hits) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (endpoint_id, version_id, group_id)"
    " DO UPDATE SET hits = group_hits.hits + excluded.hits"
)
UPSERT_PROCESS_HITS = (
    "INSERT INTO process_hits (process_id, day, hits, outliers) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (process_id, day) DO UPDATE SET hits = process_hits.hits + excluded.hits,"
    " outliers = process_hits.outliers + excluded.outliers"
)
UPSERT_LATENCY_DAILY = (
    "INSERT INTO latency_daily (endpoint_id, version_id, day, bucket, count)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, day, bucket)"
    " DO UPDATE SET count = latency_daily.count + excluded.count"
)
UPSERT_TRAFFIC_DAILY = (
    "INSERT INTO traffic_daily (endpoint_id, version_id, day, hits, outliers, sum_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, version_id, day)"
    " DO UPDATE SET hits = traffic_daily.hits + excluded.hits,"
    " outliers = traffic_daily.outliers + excluded.outliers,"
    " sum_ms = traffic_daily.sum_ms + excluded.sum_ms"
)
UPSERT_HITS_HOURLY = (
    "INSERT INTO hits_hourly (endpoint_id, hour, hits, outliers) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (endpoint_id, hour) DO UPDATE SET hits = hits_hourly.hits + excluded.hits,"
    " outliers = hits_hourly.outliers + excluded.outliers"
)
_SEED = (
    "SELECT DISTINCT group_id FROM latency WHERE endpoint_id = ? AND version_id = ?"
    " AND group_id > 0"
)


class GroupAdmission:
    """The groups admitted while one batch is written: the cap's sets of the pairs it touched,
    copied, and grown by the batch. Kept by :meth:`GroupCap.commit` once the batch is
    committed; dropped with a batch the store refused."""

    __slots__ = ("_cap", "_committed", "_seed", "touched")

    def __init__(
        self,
        cap: int,
        committed: dict[tuple[int, int], set[int]],
        seed: Callable[[int, int], Iterable[int]],
    ) -> None:
        self._cap = cap
        self._committed = committed
        self._seed = seed
        self.touched: dict[tuple[int, int], set[int]] = {}

    def group(self, endpoint_id: int, version_id: int, group_id: int) -> int:
        """The ``group_id`` a request of this group is counted under in ``latency``."""
        if group_id == NO_GROUP:
            return NO_GROUP
        pair = (endpoint_id, version_id)
        admitted = self.touched.get(pair)
        if admitted is None:
            known = self._committed.get(pair)
            admitted = set(self._seed(*pair) if known is None else known)
            self.touched[pair] = admitted
        if group_id in admitted:
            return group_id
        if len(admitted) < self._cap:
            admitted.add(group_id)
            return group_id
        return OTHERS


class GroupCap:
    """Which groups get ``latency`` rows of their own, per (endpoint, version): the first
    ``cap`` seen by this process, starting from those the store already holds.

    Admission is first come, per process: each process seeds an (endpoint, version) from the
    store the first time it sees it, then admits new groups while it holds fewer than ``cap``.
    Processes that see a pair at the same time may each admit ``cap`` groups of their own, so
    a store written by N processes holds up to N x ``cap`` groups per pair; the rest of each
    process's groups are counted under :data:`OTHERS`.
    """

    def __init__(self, cap: int, max_pairs: int = MAX_CACHED_PAIRS) -> None:
        self.cap = cap
        self.max_pairs = max_pairs
        self._admitted: dict[tuple[int, int], set[int]] = {}

    def begin(self, cur: _Cursor, sql: Callable[[str], str]) -> GroupAdmission:
        """An admission for one batch, seeding unseen pairs through ``cur``."""

        def seed(endpoint_id: int, version_id: int) -> list[int]:
            rows = cur.execute(sql(_SEED), (endpoint_id, version_id)).fetchall()
            return [int(group_id) for (group_id,) in rows]

        return GroupAdmission(self.cap, self._admitted, seed)

    def commit(self, admission: GroupAdmission) -> None:
        """Keep what a committed batch admitted."""
        if len(self._admitted) + len(admission.touched) > self.max_pairs:
            self._admitted.clear()  # seeded again from the store, which holds what counts
        self._admitted.update(admission.touched)

    def forget(self) -> None:
        self._admitted.clear()


class HistogramDeltas:
    """What some cells add to the ten tables: per row key, the count (and sums) to add."""

    __slots__ = (
        "daily",
        "daily_traffic",
        "group_hits",
        "hits",
        "hourly",
        "latency",
        "processes",
        "total",
        "traffic",
        "versions",
    )

    def __init__(self) -> None:
        self.latency: dict[tuple[int, int, int, int], int] = {}
        self.hourly: dict[tuple[int, int, int, int], int] = {}
        #: (endpoint, method, status, bucket) -> [count, sum_ms]
        self.total: dict[tuple[int, str, int, int], list[float]] = {}
        #: (endpoint, version, process, hour, method, status) -> [hits, outliers, sum_ms]
        self.traffic: dict[tuple[int, int, int, int, str, int], list[float]] = {}
        #: (endpoint, version, bucket) -> count: ``latency`` summed over groups
        self.versions: dict[tuple[int, int, int], int] = {}
        #: (endpoint, version, group) -> count: ``latency`` summed over buckets
        self.group_hits: dict[tuple[int, int, int], int] = {}
        #: (endpoint, version, day, bucket) -> count
        self.daily: dict[tuple[int, int, int, int], int] = {}
        #: (endpoint, version, day) -> [hits, outliers, sum_ms]
        self.daily_traffic: dict[tuple[int, int, int], list[float]] = {}
        #: (endpoint, hour) -> [hits, outliers]
        self.hits: dict[tuple[int, int], list[int]] = {}
        #: (process, day) -> [hits, outliers]
        self.processes: dict[tuple[int, int], list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.traffic)

    def add(
        self,
        endpoint_id: int,
        version_id: int,
        process_id: int,
        group_id: int,
        method: str,
        status: int,
        hour: int,
        bucket: int,
        count: int,
        sum_ms: float,
        outliers: int,
    ) -> None:
        """Add one cell; ``group_id`` is the one counted in ``latency`` (after the cap)."""
        day = hour - hour % 86_400
        _count(self.latency, (endpoint_id, version_id, group_id, bucket), count)
        _count(self.hourly, (endpoint_id, version_id, hour, bucket), count)
        _count(self.versions, (endpoint_id, version_id, bucket), count)
        _count(self.group_hits, (endpoint_id, version_id, group_id), count)
        _count(self.daily, (endpoint_id, version_id, day, bucket), count)
        _sums(self.total, (endpoint_id, method, status, bucket), count, sum_ms)
        traffic_key = (endpoint_id, version_id, process_id, hour, method, status)
        _sums(self.traffic, traffic_key, count, outliers, sum_ms)
        _sums(self.daily_traffic, (endpoint_id, version_id, day), count, outliers, sum_ms)
        _sums(self.hits, (endpoint_id, hour), count, outliers)
        _sums(self.processes, (process_id, day), count, outliers)


def _count(table: dict[_K, int], key: _K, count: int) -> None:
    """Add ``count`` to a table of counts."""
    table[key] = table.get(key, 0) + count


def _sums(table: dict[_K, list[_N]], key: _K, *values: _N) -> None:
    """Add ``values`` to a table of running sums, element by element."""
    found = table.get(key)
    if found is None:
        table[key] = list(values)
    else:
        for i, value in enumerate(values):
            found[i] += value


#: a cell of the ingest path's fold: (index of the record's names in the batch, status, hour
#: number -- ``started_at // 3600`` --, bucket)
Cell = tuple[int, int, float, int]


def fold_cells(
    cells: dict[Cell, list[float]],
    outliers: dict[Cell, int],
    names: list[tuple[int, int, str]],
    version_id: int,
    process_id: int,
    admission: GroupAdmission,
) -> HistogramDeltas:
    """The deltas of the ingest path's cells: ``cells`` hold each cell's durations, in the
    order of the records, ``outliers`` the outliers of the cells that have some, ``names``
    the (endpoint id, group id -- 0 for none --, method) of each names index. Groups are
    admitted in the order of their first record (first come)."""
    deltas = HistogramDeltas()
    for cell, durations in cells.items():
        index, status, hour, bucket = cell
        endpoint_id, group_id, method = names[index]
        deltas.add(
            endpoint_id,
            version_id,
            process_id,
            admission.group(endpoint_id, version_id, group_id),
            method,
            status,
            int(hour) * 3600,
            bucket,
            len(durations),
            sum(durations),
            outliers.get(cell, 0),
        )
    return deltas


def upsert_histograms(
    cur: _Cursor, sql: Callable[[str], str], deltas: HistogramDeltas, *, ordered: bool
) -> None:
    """Add ``deltas`` to the ten tables with ``cur`` (in the caller's transaction).

    ``ordered``: upsert each table's rows in key order, tables always in the same order, so
    that concurrent writers (PostgreSQL's row locks) take the rows' locks in one global order
    and never wait for each other in a cycle.
    """
    latency: Iterable[tuple[Any, ...]] = deltas.latency.items()
    hourly: Iterable[tuple[Any, ...]] = deltas.hourly.items()
    total: Iterable[tuple[Any, ...]] = deltas.total.items()
    traffic: Iterable[tuple[Any, ...]] = deltas.traffic.items()
    if ordered:
        latency, hourly, total, traffic = (
            sorted(latency),
            sorted(hourly),
            sorted(total),
            sorted(traffic),
        )
    if deltas.latency:
        cur.executemany(sql(UPSERT_LATENCY), [(*key, count) for key, count in latency])
    if deltas.hourly:
        cur.executemany(sql(UPSERT_LATENCY_HOURLY), [(*key, count) for key, count in hourly])
    if deltas.total:
        cur.executemany(sql(UPSERT_LATENCY_TOTAL), [(*key, int(c), s) for key, (c, s) in total])
    if deltas.traffic:
        cur.executemany(
            sql(UPSERT_TRAFFIC), [(*key, int(h), int(o), s) for key, (h, o, s) in traffic]
        )
    _upsert_coarse(cur, sql, deltas, ordered=ordered)


def _upsert_coarse(
    cur: _Cursor, sql: Callable[[str], str], deltas: HistogramDeltas, *, ordered: bool
) -> None:
    """The upserts of schema v5's tables, after the four others (always in this order)."""
    versions: Iterable[tuple[Any, ...]] = deltas.versions.items()
    group_hits: Iterable[tuple[Any, ...]] = deltas.group_hits.items()
    daily: Iterable[tuple[Any, ...]] = deltas.daily.items()
    daily_traffic: Iterable[tuple[Any, ...]] = deltas.daily_traffic.items()
    hits: Iterable[tuple[Any, ...]] = deltas.hits.items()
    processes: Iterable[tuple[Any, ...]] = deltas.processes.items()
    if ordered:
        versions, group_hits, daily = sorted(versions), sorted(group_hits), sorted(daily)
        daily_traffic, hits, processes = sorted(daily_traffic), sorted(hits), sorted(processes)
    if deltas.versions:
        cur.executemany(sql(UPSERT_LATENCY_VERSION), [(*key, n) for key, n in versions])
    if deltas.group_hits:
        cur.executemany(sql(UPSERT_GROUP_HITS), [(*key, n) for key, n in group_hits])
    if deltas.daily:
        cur.executemany(sql(UPSERT_LATENCY_DAILY), [(*key, n) for key, n in daily])
    if deltas.daily_traffic:
        cur.executemany(
            sql(UPSERT_TRAFFIC_DAILY),
            [(*key, int(h), int(o), s) for key, (h, o, s) in daily_traffic],
        )
    if deltas.hits:
        cur.executemany(sql(UPSERT_HITS_HOURLY), [(*key, h, o) for key, (h, o) in hits])
    if deltas.processes:
        cur.executemany(sql(UPSERT_PROCESS_HITS), [(*key, h, o) for key, (h, o) in processes])
