"""The embedded default store: one SQLite file in WAL mode, shared by every process.

Each process's writer thread holds one connection and writes batches in ``BEGIN IMMEDIATE``
transactions; WAL lets the report read while workers write, and a generous busy timeout lets
several gunicorn workers take turns on the same file.
"""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from .base import (
    Baseline,
    FrameKey,
    OutlierCapture,
    ProcessInfo,
    ProfileStack,
    RequestRecord,
    RouteInfo,
    Store,
    StoreError,
)
from .schema import (
    INSERT_FRAME,
    INSERT_STACK,
    MIGRATIONS,
    SCHEMA_VERSION,
    SELECT_FRAME,
    SELECT_STACK,
    UPSERT_PROFILE_STACK,
)

__all__ = ["SQLiteStore", "connect_sqlite", "open_stores"]

BUSY_TIMEOUT_S = 30.0

_open_stores: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def open_stores() -> list[SQLiteStore]:
    """The stores of this process whose connection is open (tests check none leaks)."""
    return [store for store in list(_open_stores) if store._conn is not None]


def connect_sqlite(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with flamewatch's settings: autocommit mode, WAL, long busy timeout."""
    if readonly:
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    else:
        conn = sqlite3.connect(
            os.fspath(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    try:
        if not readonly:
            _set_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    # Switching to WAL needs a moment alone with the file; another process may be doing the same.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SQLiteStore(Store):
    """A :class:`Store` in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._conn: sqlite3.Connection | None = None
        # name -> id caches; only ever filled from committed rows
        self._endpoint_ids: dict[str, int] = {}
        self._rule_ids: dict[tuple[int, str], int] = {}
        self._group_ids: dict[str, int] = {}
        self._process_versions: dict[int, int] = {}
        self._frame_ids: dict[FrameKey, int] = {}
        self._stack_ids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connection and schema ---------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect_sqlite(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}") from exc
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        _open_stores.add(self)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _open_stores.discard(self)
            conn.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self!r} is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------

    def register_process(self, process: ProcessInfo) -> int:
        with self._transaction() as cur:
            version_id = _upsert_version(cur, process.version, process.version_source, time.time())
            cur.execute(
                "INSERT INTO processes (hostname, pid, version_id, agent, started_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    process.hostname,
                    process.pid,
                    version_id,
                    process.agent,
                    process.started_at,
                    process.started_at,
                ),
            )
            process_id = cur.lastrowid
        assert process_id is not None
        self._process_versions[process_id] = version_id
        return process_id

    def write_requests(self, process_id: int, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        version_id = self._process_versions[process_id]
        new_endpoints: dict[str, int] = {}
        new_rules: dict[tuple[int, str], int] = {}
        new_groups: dict[str, int] = {}
        last_accessed: dict[int, float] = {}
        with self._transaction() as cur:
            rows = []
            for r in records:
                endpoint_id = self._endpoint_ids.get(r.endpoint) or new_endpoints.get(r.endpoint)
                if endpoint_id is None:
                    endpoint_id = _upsert_endpoint(cur, r.endpoint, True, r.started_at)
                    new_endpoints[r.endpoint] = endpoint_id
                rule_id = None
                if r.rule is not None:
                    key = (endpoint_id, r.rule)
                    rule_id = self._rule_ids.get(key) or new_rules.get(key)
                    if rule_id is None:
                        rule_id = _upsert_rule(cur, endpoint_id, r.rule, (), r.started_at)
                        new_rules[key] = rule_id
                group_id = None
                if r.group is not None:
                    group_id = self._group_ids.get(r.group) or new_groups.get(r.group)
                    if group_id is None:
                        group_id = _upsert_group(cur, r.group)
                        new_groups[r.group] = group_id
                if r.started_at > last_accessed.get(endpoint_id, 0.0):
                    last_accessed[endpoint_id] = r.started_at
                rows.append(
                    (
                        endpoint_id,
                        rule_id,
                        version_id,
                        group_id,
                        process_id,
                        r.method,
                        r.status,
                        r.started_at,
                        r.duration_ms,
                        r.client_ip,
                        int(r.is_outlier),
                        r.threshold_ms,
                    )
                )
            plain = [row for row, r in zip(rows, records, strict=True) if r.capture is None]
            cur.executemany(_INSERT_REQUEST, plain)
            for row, r in zip(rows, records, strict=True):
                if r.capture is not None:
                    cur.execute(_INSERT_REQUEST, row)
                    _insert_outlier(cur, cur.lastrowid, r.capture)
            cur.executemany(
                "UPDATE endpoints SET last_accessed = max(coalesce(last_accessed, 0), ?)"
                " WHERE id = ?",
                [(t, endpoint_id) for endpoint_id, t in last_accessed.items()],
            )
            cur.execute(
                "UPDATE versions SET last_seen = max(last_seen, ?) WHERE id = ?",
                (max(last_accessed.values()), version_id),
            )
        self._endpoint_ids.update(new_endpoints)
        self._rule_ids.update(new_rules)
        self._group_ids.update(new_groups)

    def write_profiles(self, process_id: int, stacks: Sequence[ProfileStack]) -> None:
        if not stacks:
            return
        version_id = self._process_versions[process_id]
        new_endpoints: dict[str, int] = {}
        new_frames: dict[FrameKey, int] = {}
        new_stacks: dict[str, int] = {}
        now = time.time()
        with self._transaction() as cur:
            rows = []
            for s in stacks:
                endpoint_id = self._endpoint_ids.get(s.endpoint) or new_endpoints.get(s.endpoint)
                if endpoint_id is None:
                    endpoint_id = _upsert_endpoint(cur, s.endpoint, True, now)
                    new_endpoints[s.endpoint] = endpoint_id
                frame_ids = []
                for frame in s.frames:
                    frame_id = self._frame_ids.get(frame) or new_frames.get(frame)
                    if frame_id is None:
                        frame_id = new_frames[frame] = _insert_select(
                            cur, INSERT_FRAME, SELECT_FRAME, frame
                        )
                    frame_ids.append(frame_id)
                joined = ",".join(map(str, frame_ids))
                stack_id = self._stack_ids.get(joined) or new_stacks.get(joined)
                if stack_id is None:
                    stack_id = new_stacks[joined] = _insert_select(
                        cur, INSERT_STACK, SELECT_STACK, (joined,)
                    )
                rows.append((endpoint_id, version_id, s.group, stack_id, s.samples, s.time_ms))
            cur.executemany(UPSERT_PROFILE_STACK, rows)
        self._endpoint_ids.update(new_endpoints)
        if len(self._frame_ids) + len(new_frames) > _MAX_CACHED_IDS:
            self._frame_ids.clear()
        if len(self._stack_ids) + len(new_stacks) > _MAX_CACHED_IDS:
            self._stack_ids.clear()
        self._frame_ids.update(new_frames)
        self._stack_ids.update(new_stacks)

    def record_routes(
        self, routes: Sequence[RouteInfo], monitored_default: Callable[[str], bool], now: float
    ) -> None:
        new_endpoints: dict[str, int] = {}
        new_rules: dict[tuple[int, str], int] = {}
        with self._transaction() as cur:
            for route in routes:
                endpoint_id = _upsert_endpoint(
                    cur, route.endpoint, monitored_default(route.endpoint), now
                )
                new_endpoints[route.endpoint] = endpoint_id
                key = (endpoint_id, route.rule)
                new_rules[key] = _upsert_rule(cur, endpoint_id, route.rule, route.methods, now)
        self._endpoint_ids.update(new_endpoints)
        self._rule_ids.update(new_rules)

    def set_monitored(self, endpoint: str, monitored: bool) -> None:
        with self._transaction() as cur:
            _upsert_endpoint(cur, endpoint, monitored, time.time())
            cur.execute(
                "UPDATE endpoints SET monitored = ? WHERE name = ?", (int(monitored), endpoint)
            )

    def update_process(self, process_id: int, *, last_seen: float, dropped: int) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE processes SET last_seen = ?, dropped = ? WHERE id = ?",
                (last_seen, dropped, process_id),
            )

    # -- reading -----------------------------------------------------------------------------

    def monitor_flags(self) -> dict[str, bool]:
        rows = self.conn.execute("SELECT name, monitored FROM endpoints").fetchall()
        return {name: bool(flag) for name, flag in rows}

    def baselines(self, version: str, window: int) -> dict[str, Baseline]:
        row = self.conn.execute("SELECT id FROM versions WHERE name = ?", (version,)).fetchone()
        if row is None:
            return {}
        result: dict[str, Baseline] = {}
        for endpoint_id, name in self.conn.execute("SELECT id, name FROM endpoints").fetchall():
            count, mean, mean_sq = self.conn.execute(
                "SELECT count(*), avg(d), avg(d * d) FROM (SELECT duration_ms AS d FROM requests"
                " WHERE endpoint_id = ? AND version_id = ? AND is_outlier = 0"
                " ORDER BY id DESC LIMIT ?)",
                (endpoint_id, row[0], window),
            ).fetchone()
            if count:
                result[name] = Baseline(count, mean, max(mean_sq - mean * mean, 0.0))
        return result


_MAX_CACHED_IDS = 100_000


def _insert_select(cur: sqlite3.Cursor, insert: str, select: str, values: tuple[Any, ...]) -> int:
    cur.execute(insert, values)
    return int(cur.execute(select, values).fetchone()[0])


_INSERT_REQUEST = (
    "INSERT INTO requests (endpoint_id, rule_id, version_id, group_id, process_id,"
    " method, status, started_at, duration_ms, client_ip, is_outlier, threshold_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_outlier(cur: sqlite3.Cursor, request_id: int | None, capture: OutlierCapture) -> None:
    cur.execute(
        "INSERT INTO outliers (request_id, request_json, resources_json, threshold_stack_json,"
        " profile, profile_bytes, sample_count, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            request_id,
            orjson.dumps(capture.request).decode(),
            orjson.dumps(capture.resources).decode(),
            None
            if capture.threshold_stack is None
            else orjson.dumps(capture.threshold_stack).decode(),
            capture.profile,
            len(capture.profile or b""),
            capture.sample_count,
            capture.note,
        ),
    )


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(MIGRATIONS[0][0])  # the meta table
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the store's schema version is {found}, newer than this flamewatch understands"
                f" ({SCHEMA_VERSION}); upgrade flamewatch to use it"
            )
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


def _upsert_version(cur: sqlite3.Cursor, name: str, source: str, now: float) -> int:
    cur.execute(
        "INSERT INTO versions (name, source, first_seen, last_seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        (name, source, now, now),
    )
    return int(cur.execute("SELECT id FROM versions WHERE name = ?", (name,)).fetchone()[0])


def _upsert_endpoint(cur: sqlite3.Cursor, name: str, monitored: bool, now: float) -> int:
    cur.execute(
        "INSERT INTO endpoints (name, monitored, first_seen, last_seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        (name, int(monitored), now, now),
    )
    return int(cur.execute("SELECT id FROM endpoints WHERE name = ?", (name,)).fetchone()[0])


def _upsert_rule(
    cur: sqlite3.Cursor, endpoint_id: int, rule: str, methods: tuple[str, ...], now: float
) -> int:
    joined = ",".join(sorted(methods))
    cur.execute(
        "INSERT INTO rules (endpoint_id, rule, methods, first_seen, last_seen)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, rule) DO UPDATE SET"
        " last_seen = max(last_seen, excluded.last_seen),"
        " methods = CASE WHEN excluded.methods = '' THEN methods ELSE excluded.methods END",
        (endpoint_id, rule, joined, now, now),
    )
    return int(
        cur.execute(
            "SELECT id FROM rules WHERE endpoint_id = ? AND rule = ?", (endpoint_id, rule)
        ).fetchone()[0]
    )


def _upsert_group(cur: sqlite3.Cursor, name: str) -> int:
    cur.execute("INSERT INTO user_groups (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
    return int(cur.execute("SELECT id FROM user_groups WHERE name = ?", (name,)).fetchone()[0])
