"""Building the latency histograms of a store from the rows written before they existed.

Schema v4 added the histograms (:mod:`.histograms`); from then on the writer fills them with
every batch. A store that had requests before is marked when it is migrated: ``meta`` gets
the highest request id then (``histograms_backfill_to``: the rows up to it are counted by the
backfill, every later row by the writer that wrote it -- never both) and the highest id the
backfill has folded so far (``histograms_backfilled``, 0 at first).

:func:`backfill_histograms` folds the rows in between, in id order, :data:`BATCH_ROWS` at a
time, each batch one transaction that adds its counts and moves the watermark together: a
crash loses at most the batch under way, which the next run folds again, and a batch is never
counted twice. Two backfills at once take turns (SQLite's write lock; a row lock on the
watermark in PostgreSQL) while the workers keep writing. ``flamewatch migrate`` runs it, and
so does every command that reads the store while it is pending.

Rows the retention would delete are kept while they wait for the backfill
(:func:`~.retention.prune`), so the histograms never miss them -- and, in SQLite, whose row
ids are the largest one plus one, no new row can reuse an id the backfill has yet to read.
Workers of an older flamewatch still running after the migration write rows the histograms
miss (they do not know the tables); restart every worker after upgrading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flamewatch.sampler.histogram import bucket_of
from flamewatch.sampler.storable import DEFAULT_HISTOGRAM_GROUPS

from .dialect import StoreConnection
from .histograms import NO_GROUP, GroupAdmission, GroupCap, HistogramDeltas, upsert_histograms
from .schema import SCHEMA_VERSION

__all__ = [
    "BACKFILLED",
    "BACKFILL_TO",
    "BATCH_ROWS",
    "HISTOGRAMS_VERSION",
    "BackfillState",
    "backfill_histograms",
    "backfill_state",
    "histograms_pending",
    "mark_backfill",
    "rebuild_histograms",
]

#: the schema version that added the histograms
HISTOGRAMS_VERSION = 4
#: ``meta`` key: the highest request id written before the histograms existed
BACKFILL_TO = "histograms_backfill_to"
#: ``meta`` key: the highest request id the backfill has folded into the histograms
BACKFILLED = "histograms_backfilled"
#: rows folded per transaction
BATCH_ROWS = 50_000
#: the tables the writer and the backfill fill from the rows
HISTOGRAM_TABLES = (
    "latency",
    "latency_hourly",
    "latency_total",
    "traffic",
    "latency_version",
    "group_hits",
    "latency_daily",
    "traffic_daily",
    "hits_hourly",
    "process_hits",
)

_ROWS = (
    "SELECT id, endpoint_id, version_id, process_id, group_id, method, status, started_at,"
    " duration_ms, is_outlier FROM requests WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
)


@dataclass(frozen=True)
class BackfillState:
    """How far the backfill is: rows with ids in ``(done, end]`` are still to fold."""

    done: int = 0
    end: int = 0
    #: whether the store's schema predates this flamewatch's histograms (schema 4 the first
    #: ones, 5 the coarser ones the views read): migrating it comes first
    old_schema: bool = False

    @property
    def pending(self) -> bool:
        return self.old_schema or self.done < self.end


def mark_backfill(execute: Callable[..., Any], dialect: Callable[[str], str]) -> None:
    """Record, while a store with rows is migrated to the histograms' schema, which rows the
    backfill is to fold: those there now. ``execute`` runs a statement in the migration's
    transaction (a DB-API connection's or cursor's), ``dialect`` adapts qmark SQL to it."""
    (end,) = execute("SELECT coalesce(max(id), 0) FROM requests").fetchone()
    if int(end) > 0:
        insert = dialect(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        execute(insert, (BACKFILL_TO, str(int(end))))
        execute(insert, (BACKFILLED, "0"))


def backfill_state(conn: StoreConnection | Any, *, lock: bool = False) -> BackfillState:
    """Where the backfill of a store stands (any connection to it; ``lock``: inside a
    transaction, hold the watermark until it ends -- PostgreSQL -- so that two backfills
    take turns)."""
    conn = StoreConnection.wrap(conn)
    found = dict(
        conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('schema_version', ?, ?)"
            + (" FOR UPDATE" if lock and conn.is_postgres else ""),
            (BACKFILL_TO, BACKFILLED),
        ).fetchall()
    )
    return BackfillState(
        done=int(found.get(BACKFILLED, 0)),
        end=int(found.get(BACKFILL_TO, 0)),
        old_schema=int(found.get("schema_version", 0)) < SCHEMA_VERSION,
    )


def histograms_pending(conn: StoreConnection | Any) -> bool:
    """Whether a store's histograms miss some of its rows: its schema predates them, or their
    backfill has not finished (``flamewatch migrate`` does both). Any connection, read-only
    included; a page can say so instead of showing counts that are short."""
    return backfill_state(conn).pending


def pending_rows(conn: StoreConnection) -> int:
    """How many rows the backfill has still to fold (for a progress bar)."""
    state = backfill_state(conn)
    if state.done >= state.end:
        return 0
    (count,) = conn.execute(
        "SELECT count(*) FROM requests WHERE id > ? AND id <= ?", (state.done, state.end)
    ).fetchone()
    return int(count)


def rebuild_histograms(conn: StoreConnection) -> int:
    """Forget the histograms and mark every stored row for the backfill to fold again; returns
    how many rows wait. For a store whose rows were changed after they were written (their
    times rewritten, rows copied in by hand): :func:`backfill_histograms` (or ``flamewatch
    migrate``) then builds the histograms those rows make. Counts of rows the retention has
    already deleted are lost with the histograms. The store's schema must be current.

    One transaction: a writer's batch committed before it is folded by the backfill, one
    committed after counts itself (PostgreSQL: the lock waits for the batches under way and
    holds new ones until the rows to fold are marked, so none is counted twice)."""
    with conn.transaction():
        if backfill_state(conn).old_schema:
            raise ValueError("the store's schema predates the histograms: migrate it first")
        if conn.is_postgres:
            conn.execute("LOCK TABLE requests IN SHARE MODE")
        for table in HISTOGRAM_TABLES:
            conn.execute(f"DELETE FROM {table}")
        (end,) = conn.execute("SELECT coalesce(max(id), 0) FROM requests").fetchone()
        upsert = (
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        conn.execute(upsert, (BACKFILL_TO, str(int(end))))
        conn.execute(upsert, (BACKFILLED, "0"))
    return pending_rows(conn)


def backfill_histograms(
    conn: StoreConnection,
    *,
    histogram_groups: int = DEFAULT_HISTOGRAM_GROUPS,
    batch_rows: int = BATCH_ROWS,
    max_batches: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> BackfillState:
    """Fold the rows still waiting into the histograms, ``batch_rows`` per transaction;
    ``progress`` is told each batch's row count. Stops after ``max_batches`` (then rows may
    remain); returns where the backfill stands. The store's schema must be current.

    Groups are admitted in the order of their rows, at most ``histogram_groups`` per
    endpoint and version, after those the histograms already hold (the writers' own).
    """
    cap = GroupCap(histogram_groups)
    batches = 0
    while max_batches is None or batches < max_batches:
        with conn.transaction():
            state = backfill_state(conn, lock=True)
            if state.old_schema:
                raise ValueError("the store's schema predates the histograms: migrate it first")
            if state.done >= state.end:
                return state
            rows = conn.execute(_ROWS, (state.done, state.end, batch_rows)).fetchall()
            admission = cap.begin(conn, _as_written)
            deltas = _fold(rows, admission)
            upsert_histograms(conn, _as_written, deltas, ordered=conn.is_postgres)
            done = int(rows[-1][0]) if len(rows) == batch_rows else state.end
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(done), BACKFILLED))
        cap.commit(admission)
        batches += 1
        if progress is not None:
            progress(len(rows))
    return backfill_state(conn)


def _as_written(statement: str) -> str:
    return statement  # a StoreConnection takes qmark SQL on every backend


def _fold(rows: list[Any], admission: GroupAdmission) -> HistogramDeltas:
    """The deltas of stored rows, as the writer's fold makes them: cells in the order of
    their first row, so groups are admitted first come."""
    cells: dict[tuple[Any, ...], list[Any]] = {}
    for _, e, v, p, g, method, status, started, ms, outlier in rows:
        key = (e, v, p, g or NO_GROUP, method, status, int(started // 3600) * 3600, bucket_of(ms))
        cell = cells.get(key)
        if cell is None:
            cells[key] = [1, ms, outlier]
        else:
            cell[0] += 1
            cell[1] += ms
            cell[2] += outlier
    deltas = HistogramDeltas()
    for (e, v, p, g, method, status, hour, bucket), (count, total, outliers) in cells.items():
        group = admission.group(e, v, g)
        deltas.add(e, v, p, group, method, status, hour, bucket, count, total, outliers)
    return deltas
