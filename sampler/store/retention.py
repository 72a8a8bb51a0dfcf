"""Retention in two tiers: raw rows, and the latency histograms, each older than its cutoff.

Raw rows (:func:`prune`): each batch is its own short transaction of at most ``batch_size``
rows, so neither SQLite (one writer at a time) nor PostgreSQL (row locks) is held for long
while workers keep writing. Captured outliers (facts, params and profile: the bulky and
sensitive part) can be pruned on their own, keeping the request timings; pruning requests
removes their outliers first. It never touches the histograms, and keeps the rows the
histograms' backfill has yet to fold (:mod:`.backfill`).

Histograms (:func:`prune_histograms`), on their own, usually much longer cutoff, rounded down
to the start of a UTC day so that the hourly tables and the daily ones (schema 5) keep the same
days and still add up alike: the hourly histograms and counts (``latency_hourly``, ``traffic``,
``hits_hourly``) of the hours before it, one hour per transaction; the daily ones
(``latency_daily``, ``traffic_daily``, ``process_hits``) of the days before it, one day per
transaction; and the all-time histograms (``latency``, ``latency_version``, ``group_hits``) of
the versions last seen before it, one endpoint of a version per transaction.
``latency_total`` -- the cumulative counters behind the metrics -- is never pruned. Used by
``flamewatch prune`` and by the writer when ``FLAMEWATCH_RETENTION_DAYS`` or
``FLAMEWATCH_HISTOGRAM_RETENTION_DAYS`` is set.
"""

from __future__ import annotations

import time

from .backfill import backfill_state
from .base import Pruned, PrunedHistograms
from .dialect import StoreConnection

__all__ = [
    "BATCH_ROWS",
    "Pruned",
    "PrunedHistograms",
    "claim_retention_run",
    "prune",
    "prune_histograms",
]

BATCH_ROWS = 5000
_CLAIM_KEY = "retention_run_at"


_OLD_OUTLIERS = (
    "DELETE FROM outliers WHERE id IN (SELECT o.id FROM outliers o"
    " JOIN requests r ON r.id = o.request_id WHERE r.started_at < ? LIMIT ?)"
)
# the rows in (done, end] wait for the histograms' backfill: kept
_OLD_REQUESTS = (
    "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE started_at < ?"
    " AND NOT (id > ? AND id <= ?) AND id NOT IN (SELECT request_id FROM outliers) LIMIT ?)"
)


def prune(
    conn: StoreConnection,
    cutoff: float,
    *,
    profiles_only: bool = False,
    batch_size: int = BATCH_ROWS,
    max_batches: int | None = None,
) -> Pruned:
    """Delete outliers (and, unless ``profiles_only``, requests) that started before
    ``cutoff`` (Unix time), ``batch_size`` rows per transaction; stop after ``max_batches``
    with ``done=False`` when rows remain."""
    result = Pruned()
    waiting = backfill_state(conn)
    steps: list[tuple[str, str, tuple[float, ...]]] = [
        ("outliers", _OLD_OUTLIERS, (cutoff, batch_size))
    ]
    if not profiles_only:
        steps.append(("requests", _OLD_REQUESTS, (cutoff, waiting.done, waiting.end, batch_size)))
    for table, sql, params in steps:
        while True:
            if max_batches is not None and result.batches >= max_batches:
                result.done = False
                return result
            with conn.transaction():
                deleted = max(conn.execute(sql, params).rowcount, 0)
            result.batches += 1
            setattr(result, table, getattr(result, table) + deleted)
            if deleted < batch_size:
                break
    return result


_OLD_HOURS = (
    "SELECT hour FROM latency_hourly WHERE hour <= ? UNION SELECT hour FROM traffic"
    " WHERE hour <= ? UNION SELECT hour FROM hits_hourly WHERE hour <= ? ORDER BY hour LIMIT ?"
)
_OLD_DAYS = (
    "SELECT day FROM latency_daily WHERE day <= ? UNION SELECT day FROM traffic_daily"
    " WHERE day <= ? UNION SELECT day FROM process_hits WHERE day <= ? ORDER BY day LIMIT ?"
)
_DAY = 86_400
_OLD_VERSIONS = (
    "SELECT DISTINCT endpoint_id, version_id FROM latency WHERE version_id IN"
    " (SELECT id FROM versions WHERE last_seen < ?) ORDER BY endpoint_id, version_id LIMIT ?"
)


def prune_histograms(
    conn: StoreConnection, cutoff: float, *, max_batches: int | None = None
) -> PrunedHistograms:
    """Delete the hourly and daily histograms and traffic counts of the UTC days that ended
    before ``cutoff`` (Unix time), and the all-time histograms of the versions last seen before
    it; one hour, one day, or one endpoint of a version, per transaction. Stops after
    ``max_batches`` with ``done=False`` when some remain. ``latency_total`` is kept."""
    result = PrunedHistograms()
    last_day = int(cutoff // _DAY) * _DAY - _DAY  # the last UTC day that ended by the cutoff
    last_hour = last_day + _DAY - 3600  # its last hour
    # a version seen again since it was selected (a process of it started) keeps its rows
    still_old = " AND version_id IN (SELECT id FROM versions WHERE last_seen < ?)"
    steps: list[tuple[str, tuple[object, ...], tuple[str, ...], str, tuple[object, ...]]] = [
        (
            _OLD_HOURS,
            (last_hour, last_hour, last_hour),
            ("latency_hourly", "traffic", "hits_hourly"),
            "hour = ?",
            (),
        ),
        (
            _OLD_DAYS,
            (last_day, last_day, last_day),
            ("latency_daily", "traffic_daily", "process_hits"),
            "day = ?",
            (),
        ),
        (
            _OLD_VERSIONS,
            (cutoff,),
            ("latency", "latency_version", "group_hits"),
            "endpoint_id = ? AND version_id = ?" + still_old,
            (cutoff,),
        ),
    ]
    for select, params, tables, where, tail in steps:
        while True:
            keys = conn.execute(select, (*params, 100)).fetchall()
            if not keys:
                break
            for key in keys:
                if max_batches is not None and result.batches >= max_batches:
                    result.done = False
                    return result
                with conn.transaction():
                    for table in tables:
                        deleted = conn.execute(f"DELETE FROM {table} WHERE {where}", (*key, *tail))
                        result.rows += max(deleted.rowcount, 0)
                result.batches += 1
                if select is _OLD_HOURS:
                    result.hours += 1
                elif select is _OLD_VERSIONS:
                    result.versions += 1
    return result


def claim_retention_run(conn: StoreConnection, every: float, now: float | None = None) -> bool:
    """Whether this process should run retention now: at most one process per ``every``
    seconds, claimed by a compare-and-set on a ``meta`` row that every backend does
    atomically."""
    now = time.time() if now is None else now
    with conn.transaction():
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, '0') ON CONFLICT (key) DO NOTHING",
            (_CLAIM_KEY,),
        )
        (last,) = conn.execute("SELECT value FROM meta WHERE key = ?", (_CLAIM_KEY,)).fetchone()
        if now - float(last) < every:
            return False
        claimed = conn.execute(
            "UPDATE meta SET value = ? WHERE key = ? AND value = ?", (repr(now), _CLAIM_KEY, last)
        ).rowcount
    return bool(claimed == 1)
