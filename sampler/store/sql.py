"""What the SQL stores share: the writing and reading that is the same in SQLite and PostgreSQL.

:class:`SQLStore` holds the name -> id caches and the statements both backends run alike,
written once in qmark style (``?``); a backend whose driver wants another style rewrites them in
:meth:`SQLStore._sql`. Each backend keeps what really differs: how it connects and migrates,
its transactions, the upserts of names (dialects differ in ``max``/``GREATEST`` and
``RETURNING``), and how a batch is inserted (PostgreSQL commits new names on their own first,
then ``COPY``; SQLite does all in one ``BEGIN IMMEDIATE`` transaction).
"""

from __future__ import annotations

import abc
import itertools
import math
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import orjson

from flamewatch.sampler.histogram import MIN_MS
from flamewatch.sampler.storable import Limits, capture_json, storable, storable_json

from .backfill import HISTOGRAMS_VERSION, mark_backfill
from .base import (
    Baseline,
    FrameKey,
    OutlierCapture,
    ProcessInfo,
    ProfileStack,
    Pruned,
    PrunedHistograms,
    RequestFields,
    RouteInfo,
    Store,
    StoreError,
)
from .dialect import StoreConnection
from .histograms import (
    INV_LOG_GAMMA,
    MIN_BUCKET,
    NO_GROUP,
    Cell,
    GroupAdmission,
    GroupCap,
    HistogramDeltas,
    fold_cells,
)
from .retention import claim_retention_run, prune, prune_histograms
from .schema import (
    INSERT_FRAME,
    INSERT_STACK,
    MIGRATIONS,
    SCHEMA_VERSION,
    SELECT_FRAME,
    SELECT_STACK,
)

__all__ = [
    "BATCH_COLUMNS",
    "INSERT_REQUEST",
    "REQUEST_COLUMNS",
    "NewIds",
    "RequestBatch",
    "SQLStore",
    "apply_migrations",
    "fetch_id",
    "open_sql_stores",
    "read_monitor_flags",
]


class _Cursor(Protocol):
    """The part of a DB-API cursor (sqlite3's or psycopg's) the shared code uses."""

    def execute(self, query: str, params: Any = ..., /) -> Any: ...

    def executemany(self, query: str, params_seq: Any, /) -> Any: ...

    def fetchone(self) -> Any: ...


class _Connection(Protocol):
    def execute(self, query: str, params: Any = ..., /) -> Any: ...

    def close(self) -> None: ...


ConnT = TypeVar("ConnT", bound=_Connection)
CursorT = TypeVar("CursorT", bound=_Cursor)
_K = TypeVar("_K")

#: frames and stacks whose ids are kept in memory, at most (then the cache starts afresh)
_MAX_CACHED_IDS = 200_000
#: endpoints, rules and groups whose ids are kept in memory, at most (then the cache starts
#: afresh); each name is at most ``Limits.name_chars`` long, so the caches stay bounded however
#: many distinct groups hostile requests make up
_MAX_CACHED_NAMES = 50_000
#: a frame's function and file names (from code objects: long only in odd code)
_FRAME_CHARS = 2048

_open: weakref.WeakSet[SQLStore[Any, Any]] = weakref.WeakSet()


def open_sql_stores() -> list[SQLStore[Any, Any]]:
    """The stores of this process whose connection is open (tests check none leaks)."""
    return [store for store in list(_open) if store._conn is not None]


#: a row to insert
Row = tuple[Any, ...]
#: which of a row's rule id, group id and client address are missing (NULL), for a backend
#: that inserts such rows apart (``()`` for one that does not)
NullColumns = tuple[bool, ...]
#: what :meth:`SQLStore._request_rows` finds once per batch for a (endpoint, rule, group,
#: method, client address): the three ids, the method and the client address as stored, the
#: index of the five in the batch's order of first sight, the list their rows go to, and
#: (in a list of one, updated in place) the latest start of their requests
_Found = tuple[int, Any, Any, str, Any, int, list[Row], list[float]]


class RequestBatch(NamedTuple):
    """What :meth:`SQLStore._request_rows` makes of a batch of records."""

    #: the ``requests`` rows without a capture (:data:`REQUEST_COLUMNS`), by missing columns
    rows: dict[NullColumns, list[Row]]
    #: the rows with an outlier capture, and their capture
    captured: list[tuple[Row, OutlierCapture]]
    #: per endpoint id, its latest request's start
    last_accessed: dict[int, float]
    #: what the batch adds to the histograms
    histograms: HistogramDeltas
    #: the groups the histograms admitted, to keep once the batch is committed
    admission: GroupAdmission


#: the columns of the rows :meth:`SQLStore._request_rows` makes, in their order, followed by
#: the two that every row of a batch shares (:data:`BATCH_COLUMNS`), which the rows leave out
REQUEST_COLUMNS = (
    "endpoint_id, rule_id, group_id, method, status, started_at, duration_ms, client_ip,"
    " is_outlier, threshold_ms"
)
BATCH_COLUMNS = "version_id, process_id"
INSERT_REQUEST = (
    f"INSERT INTO requests ({REQUEST_COLUMNS}, {BATCH_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PROCESS = (
    "INSERT INTO processes (hostname, pid, version_id, agent, started_at, last_seen)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTLIER = (
    "INSERT INTO outliers (request_id, request_json, resources_json, threshold_stack_json,"
    " profile, profile_bytes, sample_count, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def fetch_id(cur: _Cursor) -> int:
    """The id in the first column of the row a statement just returned."""
    row = cur.fetchone()
    if row is None:  # pragma: no cover - every caller's statement returns a row
        raise StoreError("the store returned no row")
    return int(row[0])


def apply_migrations(conn: _Connection, dialect: Callable[[str], str]) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` inside the caller's transaction, each
    statement of :data:`MIGRATIONS` passed through ``dialect`` (the backend's types and
    placeholders); return the version found before. A newer schema is refused. A store with
    rows that gets the histograms is marked for their backfill (:mod:`.backfill`)."""
    conn.execute(dialect(MIGRATIONS[0][0]))  # the meta table
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store's schema version is {found}, newer than this flamewatch understands"
            f" ({SCHEMA_VERSION}); upgrade flamewatch to use it"
        )
    for statements in MIGRATIONS[found:]:
        for statement in statements:
            conn.execute(dialect(statement))
    if 0 < found < HISTOGRAMS_VERSION <= SCHEMA_VERSION:
        mark_backfill(conn.execute, dialect)  # the rows written before the histograms
    conn.execute(
        dialect(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        (str(SCHEMA_VERSION),),
    )
    return found


@dataclass
class NewIds:
    """Ids of names that a batch inserted or looked up, cached (:meth:`SQLStore._remember`)
    only once they are committed."""

    endpoints: dict[str, int] = field(default_factory=dict)
    rules: dict[tuple[int, str], int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    frames: dict[FrameKey, int] = field(default_factory=dict)
    stacks: dict[str, int] = field(default_factory=dict)


class SQLStore(Store, Generic[ConnT, CursorT]):
    """A :class:`Store` in a SQL database, over one connection of the backend's driver."""

    #: what a ``requests`` row holds for a missing rule id, group id or client address:
    #: None, except in a backend whose driver binds None slowly (:class:`~.sqlite.SQLiteStore`),
    #: whose statements turn it into NULL
    _null: Any = None
    #: whether rows missing different columns are kept apart (:data:`NullColumns`)
    _split_nulls = False
    #: the statement inserting one ``requests`` row (qmark SQL)
    _insert_request: str = INSERT_REQUEST

    def __init__(self, limits: Limits | None = None) -> None:
        #: what is cut or replaced before it is written (:mod:`flamewatch.sampler.storable`)
        self.limits = limits or Limits()
        self._conn: ConnT | None = None
        # name -> id caches; only ever filled from committed rows
        self._endpoint_ids: dict[str, int] = {}
        self._rule_ids: dict[tuple[int, str], int] = {}
        self._group_ids: dict[str, int] = {}
        self._process_versions: dict[int, int] = {}
        self._frame_ids: dict[FrameKey, int] = {}
        self._stack_ids: dict[str, int] = {}
        #: which groups get latency histograms of their own (only ever from committed batches)
        self._group_cap = GroupCap(self.limits.histogram_groups)

    # -- what each backend does its own way --------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> ConnT:
        """A new connection; raises :class:`StoreError` saying why there is none."""

    @abc.abstractmethod
    def _migrate(self, conn: ConnT) -> None:
        """Create the schema or bring it to the current version."""

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[CursorT]:
        """A cursor in a write transaction, committed on exit (rolled back on an error)."""

    @abc.abstractmethod
    def _insert_id(self, cur: CursorT, statement: str, params: Sequence[Any]) -> int:
        """Run an ``INSERT`` of one row (qmark SQL); return the new row's id."""

    @abc.abstractmethod
    def _upsert_version(self, cur: CursorT, name: str, source: str, now: float) -> int: ...

    @abc.abstractmethod
    def _upsert_endpoint(self, cur: CursorT, name: str, monitored: bool, now: float) -> int: ...

    @abc.abstractmethod
    def _upsert_rule(
        self, cur: CursorT, endpoint_id: int, rule: str, methods: tuple[str, ...], now: float
    ) -> int: ...

    @abc.abstractmethod
    def _upsert_group(self, cur: CursorT, name: str) -> int: ...

    def _sql(self, statement: str) -> str:
        """A statement written with ``?`` placeholders, in the driver's style."""
        return statement

    # -- connection --------------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        conn = self._connect()
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        _open.add(self)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _open.discard(self)
            conn.close()

    def forget(self) -> None:
        """Drop every cached id: the store behind this object was replaced by a new one."""
        for cache in (
            self._endpoint_ids,
            self._rule_ids,
            self._group_ids,
            self._process_versions,
            self._frame_ids,
            self._stack_ids,
        ):
            cache.clear()
        self._group_cap.forget()

    @property
    def conn(self) -> ConnT:
        if self._conn is None:
            raise StoreError(f"{self!r} is not open")
        return self._conn

    def connection(self) -> StoreConnection:
        """The open connection, speaking qmark SQL: for what moves rows in bulk (retention,
        ``flamewatch copy``) rather than through the :class:`Store` interface."""
        return StoreConnection.wrap(self.conn, self.url)

    # -- retention ---------------------------------------------------------------------------

    def claim_retention_run(self, every: float) -> bool:
        return claim_retention_run(self.connection(), every)

    def prune(
        self, cutoff: float, *, profiles_only: bool = False, max_batches: int | None = None
    ) -> Pruned:
        return prune(
            self.connection(), cutoff, profiles_only=profiles_only, max_batches=max_batches
        )

    def prune_histograms(
        self, cutoff: float, *, max_batches: int | None = None
    ) -> PrunedHistograms:
        return prune_histograms(self.connection(), cutoff, max_batches=max_batches)

    # -- writing -----------------------------------------------------------------------------

    def register_process(self, process: ProcessInfo) -> int:
        cap = self.limits.name_chars
        with self._transaction() as cur:
            # a version's first_seen is its first process's start, taken on the thread that
            # served its first request -- never this writer's first drain, which races with
            # other processes' (and other apps') writers
            version_id = self._upsert_version(
                cur,
                storable(process.version, cap),
                storable(process.version_source, cap),
                process.started_at,
            )
            process_id = self._insert_id(
                cur,
                _INSERT_PROCESS,
                (
                    storable(process.hostname, cap),
                    process.pid,
                    version_id,
                    storable(process.agent, cap),
                    process.started_at,
                    process.started_at,
                ),
            )
        self._process_versions[process_id] = version_id
        return process_id

    def set_monitored(self, endpoint: str, monitored: bool) -> None:
        endpoint = storable(endpoint, self.limits.name_chars)
        with self._transaction() as cur:
            self._upsert_endpoint(cur, endpoint, monitored, time.time())
            cur.execute(
                self._sql("UPDATE endpoints SET monitored = ? WHERE name = ?"),
                (int(monitored), endpoint),
            )

    def update_process(self, process_id: int, *, last_seen: float, dropped: int) -> None:
        with self._transaction() as cur:
            cur.execute(
                self._sql("UPDATE processes SET last_seen = ?, dropped = ? WHERE id = ?"),
                (last_seen, dropped, process_id),
            )

    def _request_rows(
        self, cur: CursorT, new: NewIds, process_id: int, records: Sequence[RequestFields]
    ) -> RequestBatch:
        """The ``requests`` rows of a batch (:data:`REQUEST_COLUMNS`), the names' ids found
        or inserted with ``cur``, and what the batch adds to the latency histograms.

        Runs on the writer thread for every record, holding the GIL the app's threads want,
        so what can be done once per distinct value is: the names' ids are looked up, the
        method and client address made storable and the row list chosen once per (endpoint,
        rule, group, method, client address) and batch. Per record: the row, the histogram
        bucket (computed inline) and one append to its cell's list of durations, found by
        the bucket alone while the names, status and hour are the record's before; the cells
        -- few: a batch has one version and one process -- are added to the four tables after
        the loop (:func:`~.histograms.fold_cells`).
        """
        version_id = self._process_versions[process_id]
        rows: dict[NullColumns, list[Row]] = {}
        captured: list[tuple[Row, OutlierCapture]] = []
        ids: dict[tuple[str, str | None, str | None, str, str | None], _Found] = {}
        # a record's cell is (names index, status, hour, bucket): the durations are kept per
        # (names index, status, hour), then per bucket, and the first three are looked up
        # again only when a record differs from the one before in them (rarely: a batch's
        # records mostly share them), so a record costs a lookup by its bucket alone
        cells: dict[tuple[int, int, float], dict[int, list[float]]] = {}
        outliers: dict[Cell, int] = {}
        log, ceil, inv_log_gamma, min_ms = math.log, math.ceil, INV_LOG_GAMMA, MIN_MS
        at: _Found | None = None  # the names of the record before, its status and hour
        status_at = -1
        hour = hour_start = hour_end = 0.0
        by_bucket: dict[int, list[float]] = {}
        for record in records:
            (endpoint, rule, method, status, started, duration, group, client_ip, outlier,
             threshold, capture) = record  # fmt: skip
            found = ids.get((endpoint, rule, group, method, client_ip))
            if found is None:
                found = ids[(endpoint, rule, group, method, client_ip)] = self._names(
                    cur, new, rows, record, len(ids)
                )
            latest = found[7]
            if started > latest[0]:  # noqa: PLR1730 - a call to max() costs more
                latest[0] = started
            row = (found[0], found[1], found[2], found[3], status, started, duration,
                   found[4], 1 if outlier else 0, threshold)  # fmt: skip
            if capture is None:
                found[6].append(row)
            else:
                captured.append((row, capture))
            if found is not at or status != status_at or not hour_start <= started < hour_end:
                at, status_at = found, status
                hour = started // 3600
                hour_start = hour * 3600
                hour_end = hour_start + 3600
                known = cells.get((found[5], status, hour))
                if known is None:
                    known = cells[(found[5], status, hour)] = {}
                by_bucket = known
            # flamewatch.sampler.histogram.bucket_of, inline (NaN and tiny: MIN_BUCKET)
            bucket = ceil(log(duration) * inv_log_gamma) if duration > min_ms else MIN_BUCKET
            durations = by_bucket.get(bucket)
            if durations is None:
                by_bucket[bucket] = [duration]
            else:
                durations.append(duration)
            if outlier:
                cell = (found[5], status, hour, bucket)
                outliers[cell] = outliers.get(cell, 0) + 1
        last_accessed: dict[int, float] = {}
        for found in ids.values():
            if found[7][0] > last_accessed.get(found[0], 0.0):
                last_accessed[found[0]] = found[7][0]
        admission = self._group_cap.begin(cur, self._sql)
        names = [(found[0], found[2] or NO_GROUP, found[3]) for found in ids.values()]
        by_cell = {
            (*key, bucket): durations
            for key, by_bucket in cells.items()
            for bucket, durations in by_bucket.items()
        }
        histograms = fold_cells(by_cell, outliers, names, version_id, process_id, admission)
        return RequestBatch(rows, captured, last_accessed, histograms, admission)

    def _names(
        self,
        cur: CursorT,
        new: NewIds,
        rows: dict[NullColumns, list[Row]],
        record: RequestFields,
        index: int,
    ) -> _Found:
        """What :meth:`_request_rows` keeps for the first record of an (endpoint, rule,
        group, method, client address) in a batch; ``index`` counts those seen before."""
        cap = self.limits.name_chars
        endpoint, rule, method, _, started, _, group, client_ip, _, _, _ = record
        endpoint_id = self._endpoint_id(cur, new, endpoint, started)
        rule_id = None if rule is None else self._rule_id(cur, new, endpoint_id, rule, started)
        group_id = None if group is None else self._group_id(cur, new, group)
        ip = None if client_ip is None else storable(client_ip, cap)
        missing = (rule_id is None, group_id is None, ip is None) if self._split_nulls else ()
        target = rows.get(missing)
        if target is None:
            target = rows[missing] = []
        null = self._null
        return (
            endpoint_id,
            null if rule_id is None else rule_id,
            null if group_id is None else group_id,
            storable(method, cap),
            null if ip is None else ip,
            index,
            target,
            [0.0],
        )

    def _insert_outliers(
        self, cur: CursorT, process_id: int, captured: Sequence[tuple[Row, OutlierCapture]]
    ) -> None:
        """Insert the requests that carry a capture one by one, each with its outlier row."""
        shared = (self._process_versions[process_id], process_id)  # BATCH_COLUMNS
        for row, capture in captured:
            request_id = self._insert_id(cur, self._insert_request, row + shared)
            self._insert_outlier(cur, request_id, capture)

    def _insert_outlier(self, cur: CursorT, request_id: int, capture: OutlierCapture) -> None:
        """One outlier row; its texts made storable and its request facts capped
        (:func:`~flamewatch.sampler.storable.capture_json`)."""
        cap = self.limits.name_chars
        stack = capture.threshold_stack
        stack_json = None if stack is None else orjson.dumps(storable_json(stack, _FRAME_CHARS))
        cur.execute(
            self._sql(_INSERT_OUTLIER),
            (
                request_id,
                capture_json(capture.request, self.limits),
                orjson.dumps(storable_json(capture.resources, cap)).decode(),
                None if stack_json is None else stack_json.decode(),
                capture.profile,
                len(capture.profile or b""),
                capture.sample_count,
                None if capture.note is None else storable(capture.note, _FRAME_CHARS),
            ),
        )

    def _profile_rows(
        self, cur: CursorT, new: NewIds, process_id: int, stacks: Sequence[ProfileStack]
    ) -> list[tuple[Any, ...]]:
        """The ``profile_stacks`` rows of a batch, the ids of endpoints, frames and stacks
        found or inserted with ``cur``."""
        version_id = self._process_versions[process_id]
        now = time.time()
        cap = self.limits.name_chars
        groups: dict[str, str] = {}  # as given -> as stored
        rows: list[tuple[Any, ...]] = []
        for s in stacks:
            endpoint_id = self._endpoint_id(cur, new, s.endpoint, now)
            frame_ids = []
            for frame in s.frames:
                frame_id = self._frame_ids.get(frame) or new.frames.get(frame)
                if frame_id is None:
                    name, filename, line = frame
                    frame_id = new.frames[frame] = self._insert_select(
                        cur,
                        INSERT_FRAME,
                        SELECT_FRAME,
                        (storable(name, _FRAME_CHARS), storable(filename, _FRAME_CHARS), line),
                    )
                frame_ids.append(frame_id)
            joined = ",".join(map(str, frame_ids))
            stack_id = self._stack_ids.get(joined) or new.stacks.get(joined)
            if stack_id is None:
                stack_id = new.stacks[joined] = self._insert_select(
                    cur, INSERT_STACK, SELECT_STACK, (joined,)
                )
            group = groups.get(s.group)
            if group is None:
                group = groups[s.group] = storable(s.group, cap)
            rows.append((endpoint_id, version_id, group, stack_id, s.samples, s.time_ms))
        return rows

    def _record_routes(
        self,
        cur: CursorT,
        new: NewIds,
        routes: Sequence[RouteInfo],
        monitored_default: Callable[[str], bool],
        now: float,
    ) -> None:
        """Upsert each route's endpoint and rule, in the order given."""
        cap = self.limits.name_chars
        for route in routes:
            monitored = monitored_default(route.endpoint)
            endpoint = _cut(route.endpoint, cap)
            endpoint_id = self._upsert_endpoint(cur, storable(endpoint, cap), monitored, now)
            new.endpoints[endpoint] = endpoint_id
            rule = _cut(route.rule, cap)
            methods = tuple(storable(method, cap) for method in route.methods)
            new.rules[(endpoint_id, rule)] = self._upsert_rule(
                cur, endpoint_id, storable(rule, cap), methods, now
            )

    def _remember(self, new: NewIds) -> None:
        """Cache the ids a batch found, once its names are committed."""
        _bounded_update(self._endpoint_ids, new.endpoints, _MAX_CACHED_NAMES)
        _bounded_update(self._rule_ids, new.rules, _MAX_CACHED_NAMES)
        _bounded_update(self._group_ids, new.groups, _MAX_CACHED_NAMES)
        _bounded_update(self._frame_ids, new.frames)
        _bounded_update(self._stack_ids, new.stacks)

    # Ids of names: from the cache, from this batch, or upserted with ``cur``. A name is cached
    # as given (a name in the cache is known to be storable) or, when longer than the cap, cut
    # first, so that no cache key is longer than the cap; it is made storable only when it is
    # not in the cache.
    def _endpoint_id(self, cur: CursorT, new: NewIds, name: str, now: float) -> int:
        name = _cut(name, self.limits.name_chars)
        found = self._endpoint_ids.get(name) or new.endpoints.get(name)
        if found is None:
            stored = storable(name, self.limits.name_chars)
            found = new.endpoints[name] = self._upsert_endpoint(cur, stored, True, now)
        return found

    def _rule_id(self, cur: CursorT, new: NewIds, endpoint_id: int, rule: str, now: float) -> int:
        key = (endpoint_id, _cut(rule, self.limits.name_chars))
        found = self._rule_ids.get(key) or new.rules.get(key)
        if found is None:
            stored = storable(key[1], self.limits.name_chars)
            found = new.rules[key] = self._upsert_rule(cur, endpoint_id, stored, (), now)
        return found

    def _group_id(self, cur: CursorT, new: NewIds, name: str) -> int:
        name = _cut(name, self.limits.name_chars)
        found = self._group_ids.get(name) or new.groups.get(name)
        if found is None:
            stored = storable(name, self.limits.name_chars)
            found = new.groups[name] = self._upsert_group(cur, stored)
        return found

    def _insert_select(
        self, cur: CursorT, insert: str, select: str, values: tuple[Any, ...]
    ) -> int:
        cur.execute(self._sql(insert), values)
        cur.execute(self._sql(select), values)
        return fetch_id(cur)

    # -- reading -----------------------------------------------------------------------------

    def monitor_flags(self) -> dict[str, bool]:
        return read_monitor_flags(self.conn)

    def baselines(self, version: str, window: int) -> dict[str, Baseline]:
        sql = self._sql
        version = storable(version, self.limits.name_chars)  # as register_process stored it
        versions = self.conn.execute(
            "SELECT id, name, first_seen FROM versions ORDER BY first_seen DESC, id DESC"
        ).fetchall()
        own = next((row for row in versions if row[1] == version), None)
        # the versions deployed before this one, latest first (all of them for a new version)
        earlier = [row for row in versions if own is None or row[2] < own[2]]
        result: dict[str, Baseline] = {}
        for endpoint_id, name in self.conn.execute("SELECT id, name FROM endpoints").fetchall():
            for version_id, version_name, _ in ([own] if own else []) + earlier:
                count, mean, mean_sq = self.conn.execute(
                    sql(
                        "SELECT count(*), avg(d), avg(d * d) FROM (SELECT duration_ms AS d"
                        " FROM requests WHERE endpoint_id = ? AND version_id = ?"
                        " AND is_outlier = 0 ORDER BY id DESC LIMIT ?) recent"
                    ),
                    (endpoint_id, version_id, window),
                ).fetchone()
                if count:
                    prior = None if own is not None and version_id == own[0] else version_name
                    result[name] = Baseline(count, mean, max(mean_sq - mean * mean, 0.0), prior)
                    break
        return result


def _bounded_update(cache: dict[_K, int], new: dict[_K, int], cap: int = _MAX_CACHED_IDS) -> None:
    """Add a batch's ids to a cache that never holds more than ``cap``: when they do not fit,
    the cache starts again from the batch's (its last ``cap`` when the batch alone has more)."""
    if len(cache) + len(new) > cap:
        cache.clear()
        if len(new) > cap:
            new = dict(itertools.islice(new.items(), len(new) - cap, None))
    cache.update(new)


def _cut(name: str, cap: int) -> str:
    """A name no longer than the cap (as :func:`storable` cuts it), for a cache key."""
    return name if len(name) <= cap else storable(name, cap)


def read_monitor_flags(conn: Any) -> dict[str, bool]:
    """Each stored endpoint's monitor flag, through any connection to a store (a store's own,
    or a read-only one such as the dashboard's)."""
    return {
        name: bool(flag) for name, flag in conn.execute("SELECT name, monitored FROM endpoints")
    }
