"""The embedded default store: one SQLite file in WAL mode, shared by every process.

Each process's writer thread holds one connection and writes batches in ``BEGIN IMMEDIATE``
transactions; WAL lets the report read while workers write, and a generous busy timeout lets
several gunicorn workers take turns on the same file.
"""

from __future__ import annotations

import functools
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flamewatch.sampler.storable import Limits

from .base import ProfileStack, RequestFields, RouteInfo, StoreError
from .histograms import upsert_histograms
from .schema import UPSERT_PROFILE_STACK
from .sql import (
    BATCH_COLUMNS,
    REQUEST_COLUMNS,
    NewIds,
    NullColumns,
    SQLStore,
    apply_migrations,
    fetch_id,
)

__all__ = ["SQLiteStore", "connect_sqlite", "migrate"]

BUSY_TIMEOUT_S = 30.0


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


#: the most ``requests`` rows one ``INSERT`` takes: 64 rows of 10 values stay within the 999
#: variables a statement may have in SQLite before 3.32
MAX_ROWS_PER_INSERT = 64
#: the values of a row that are bound (:data:`~.sql.REQUEST_COLUMNS`)
_ROW_VALUES = 10


@functools.lru_cache(maxsize=256)
def insert_request(missing: NullColumns, version_id: int, process_id: int, rows: int = 1) -> str:
    """The statement inserting ``rows`` of a batch's ``requests`` rows at once, whose rule
    id, group id and client address are missing as ``missing`` says (a missing one is bound
    as 0 and stored as NULL), with the batch's version and process ids written into it (two
    values fewer to bind)."""
    marks = ["?"] * _ROW_VALUES
    for column, is_missing in zip((1, 2, 7), missing, strict=True):
        if is_missing:
            marks[column] = "NULLIF(?, 0)"
    row = f"({', '.join(marks)}, {int(version_id)}, {int(process_id)})"
    return f"INSERT INTO requests ({REQUEST_COLUMNS}, {BATCH_COLUMNS}) VALUES " + ", ".join(
        [row] * rows
    )


def insert_rows(
    cur: sqlite3.Cursor,
    missing: NullColumns,
    version_id: int,
    process_id: int,
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """Insert ``rows`` (in their order, so their ids follow it), many per statement.

    One row per statement cost ~20,700 CPU instructions a row, half of them SQLite's work
    for each statement (its start, its end, the cursor's reset) and the driver's; 64 per
    statement cost ~11,800 (counted with callgrind). The rows go in statements of
    :data:`MAX_ROWS_PER_INSERT` rows, and the rest in statements of 32, 16, ... 1 rows, as
    many as the bits of its count: seven statements per ``missing`` at most, each prepared
    once and kept in the connection's statement cache.
    """
    flat = list(itertools.chain.from_iterable(rows))
    start, left, size = 0, len(rows), MAX_ROWS_PER_INSERT
    while left:
        while size > left:
            size //= 2
        statement = insert_request(missing, version_id, process_id, size)
        step, count = size * _ROW_VALUES, left // size
        end = start + count * step
        if count == 1:
            cur.execute(statement, flat[start:end])
        else:
            cur.executemany(statement, [flat[at : at + step] for at in range(start, end, step)])
        start, left = end, left - count * size


#: :data:`~.sql.INSERT_REQUEST` for a row whose missing ids and address are bound as 0
_INSERT_ONE_REQUEST = (
    f"INSERT INTO requests ({REQUEST_COLUMNS}, {BATCH_COLUMNS}) VALUES (?, NULLIF(?, 0),"
    " NULLIF(?, 0), ?, ?, ?, ?, NULLIF(?, 0), ?, ?, ?, ?)"
)


class SQLiteStore(SQLStore[sqlite3.Connection, sqlite3.Cursor]):
    """A :class:`Store` in one SQLite file."""

    # sqlite3 binds None through its adapter protocol, which looks ``__adapt__`` up on a type
    # that has none and formats the AttributeError it then swallows: ~3,000 CPU instructions
    # per None, where NULLIF(?, 0) costs ~250 (counted with callgrind). A missing rule id,
    # group id or client address (per batch, the same for every request of a name) is bound
    # as 0 and the rows missing the same ones are inserted together by a statement that turns
    # those into NULL; rows missing none pay nothing. (Ids start at 1, and an address is text.)
    # A threshold is missing only while an endpoint warms up: bound as None.
    _null = 0
    _split_nulls = True
    _insert_request = _INSERT_ONE_REQUEST

    def __init__(self, path: str | os.PathLike[str], limits: Limits | None = None) -> None:
        super().__init__(limits)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        #: (device, inode) of the file the connection opened: a deleted or replaced file is
        #: noticed by comparing it with what the path names now
        self._identity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connection, schema, transactions ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect_sqlite(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}") from exc
        try:
            self._identity = _identity(self.path)
        except OSError as exc:  # deleted while it was being opened
            conn.close()
            raise StoreError(f"cannot open the SQLite store {str(self.path)!r}: {exc}") from exc
        return conn

    def replaced(self) -> str | None:
        if self._conn is None or self._identity is None:
            return None
        try:
            found = _identity(self.path)
        except FileNotFoundError:
            return "its file was deleted"
        except OSError as exc:
            return f"its file cannot be found ({exc})"
        return None if found == self._identity else "its file was replaced by another one"

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrate(conn)

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

    def _insert_id(self, cur: sqlite3.Cursor, statement: str, params: Sequence[Any]) -> int:
        cur.execute(statement, params)
        assert cur.lastrowid is not None
        return cur.lastrowid

    # -- writing: each batch in one transaction, names and histograms included ---------------

    def write_requests(self, process_id: int, records: Sequence[RequestFields]) -> None:
        if not records:
            return
        new = NewIds()
        with self._transaction() as cur:
            batch = self._request_rows(cur, new, process_id, records)
            version_id = self._process_versions[process_id]
            for missing, rows in batch.rows.items():
                insert_rows(cur, missing, version_id, process_id, rows)
            self._insert_outliers(cur, process_id, batch.captured)
            upsert_histograms(cur, self._sql, batch.histograms, ordered=False)
            last_accessed = batch.last_accessed
            cur.executemany(
                "UPDATE endpoints SET last_accessed = max(coalesce(last_accessed, 0), ?)"
                " WHERE id = ?",
                [(t, endpoint_id) for endpoint_id, t in last_accessed.items()],
            )
            cur.execute(
                "UPDATE versions SET last_seen = max(last_seen, ?) WHERE id = ?",
                (max(last_accessed.values()), self._process_versions[process_id]),
            )
        self._remember(new)
        self._group_cap.commit(batch.admission)

    def write_profiles(self, process_id: int, stacks: Sequence[ProfileStack]) -> None:
        if not stacks:
            return
        new = NewIds()
        with self._transaction() as cur:
            cur.executemany(UPSERT_PROFILE_STACK, self._profile_rows(cur, new, process_id, stacks))
        self._remember(new)

    def record_routes(
        self, routes: Sequence[RouteInfo], monitored_default: Callable[[str], bool], now: float
    ) -> None:
        new = NewIds()
        with self._transaction() as cur:
            self._record_routes(cur, new, routes, monitored_default, now)
        self._remember(new)

    # -- names -------------------------------------------------------------------------------

    def _upsert_version(self, cur: sqlite3.Cursor, name: str, source: str, now: float) -> int:
        cur.execute(
            "INSERT INTO versions (name, source, first_seen, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),"
            " last_seen = max(last_seen, excluded.last_seen)",
            (name, source, now, now),
        )
        return fetch_id(cur.execute("SELECT id FROM versions WHERE name = ?", (name,)))

    def _upsert_endpoint(self, cur: sqlite3.Cursor, name: str, monitored: bool, now: float) -> int:
        cur.execute(
            "INSERT INTO endpoints (name, monitored, first_seen, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
            (name, int(monitored), now, now),
        )
        return fetch_id(cur.execute("SELECT id FROM endpoints WHERE name = ?", (name,)))

    def _upsert_rule(
        self, cur: sqlite3.Cursor, endpoint_id: int, rule: str, methods: tuple[str, ...], now: float
    ) -> int:
        cur.execute(
            "INSERT INTO rules (endpoint_id, rule, methods, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint_id, rule) DO UPDATE SET"
            " last_seen = max(last_seen, excluded.last_seen),"
            " methods = CASE WHEN excluded.methods = '' THEN methods ELSE excluded.methods END",
            (endpoint_id, rule, ",".join(sorted(methods)), now, now),
        )
        return fetch_id(
            cur.execute(
                "SELECT id FROM rules WHERE endpoint_id = ? AND rule = ?", (endpoint_id, rule)
            )
        )

    def _upsert_group(self, cur: sqlite3.Cursor, name: str) -> int:
        cur.execute(
            "INSERT INTO user_groups (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,)
        )
        return fetch_id(cur.execute("SELECT id FROM user_groups WHERE name = ?", (name,)))


def _identity(path: Path) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = apply_migrations(conn, lambda statement: statement)  # run as written
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
