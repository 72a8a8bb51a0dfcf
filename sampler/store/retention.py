"""Retention: deleting what is older than a cutoff, in bounded batches.

Each batch is its own short transaction of at most ``batch_size`` rows, so neither SQLite
(one writer at a time) nor PostgreSQL (row locks) is held for long while workers keep writing.
Captured outliers (facts, params and profile: the bulky and sensitive part) can be pruned on
their own, keeping the request timings; pruning requests removes their outliers first.
It keeps the rows the histograms' backfill has yet to fold (:mod:`.backfill`). Used by
``flamewatch prune`` and by the writer when ``FLAMEWATCH_RETENTION_DAYS`` is set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .backfill import backfill_state
from .connection import StoreConnection

__all__ = ["BATCH_ROWS", "Pruned", "claim_retention_run", "prune"]

BATCH_ROWS = 5000
_CLAIM_KEY = "retention_run_at"


@dataclass
class Pruned:
    """What a prune deleted, and whether rows older than the cutoff remain."""

    outliers: int = 0
    requests: int = 0
    batches: int = 0
    done: bool = True


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
                deleted = max(conn.execute(sql, (cutoff, batch_size)).rowcount, 0)
            result.batches += 1
            setattr(result, table, getattr(result, table) + deleted)
            if deleted < batch_size:
                break
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
