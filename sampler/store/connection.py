"""One way to talk SQL to a store, whatever its backend: for the report, copy, prune, migrate.

The store classes write through their own drivers; everything that *reads* a store (the
report, ``summary``, ``outliers``) or moves rows in bulk (``copy``, ``prune``) goes through
:class:`StoreConnection`. Its SQL is written once, in qmark style (``?``), and kept portable;
the few places where SQLite and PostgreSQL differ are methods here (:meth:`hour_start`,
:meth:`unindexed`, :meth:`insert_many`). Values come back as Python ``int``, ``float``,
``str`` and ``bytes`` from both.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote

from .base import StoreError

__all__ = [
    "Rows",
    "StoreConnection",
    "connection_of",
    "driver_errors",
    "open_connection",
    "safe_url",
    "scrub_secrets",
]

_STRING = re.compile(r"('(?:[^']|'')*')")
# user:password@ after the scheme; the password may hold '/', ':' or '@' that were not
# percent-encoded (libpq takes the last '@' before the host)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^?#]*@(?=[^@]*$)")
# password=, sslpassword= and what a typo makes of them (pasword=, passwd=, pw=)
_QUERY_SECRET = re.compile(r"(?i)([?&][a-z_]*(?:pas+w|pw|secret|token)[a-z_]*=)[^&#]*")


class Rows(Protocol):
    """What :meth:`StoreConnection.execute` returns: a DB-API cursor over the result."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


def driver_errors() -> tuple[type[Exception], ...]:
    """The database drivers' own error classes (psycopg's only if it is installed)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def safe_url(url: str) -> str:
    """A store URL without its password (in the user part or a ``password=`` query
    parameter), for messages, logs and pages."""
    if "@" in url.split("?", 1)[0]:
        url = _USERINFO.sub(r"\1:***@", url, count=1)
    return _QUERY_SECRET.sub(r"\1***", url)


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's secrets masked: libpq quotes
    the token it could not parse, which may be the password."""
    secrets: list[str] = []
    found = _USERINFO.match(url)
    if found is not None:
        secrets.append(url[len(found.group(1)) + 1 : found.end() - 1])
    secrets += [url[m.end(1) : m.end()] for m in _QUERY_SECRET.finditer(url)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
        decoded = unquote(secret)
        if decoded != secret:
            text = text.replace(decoded, "***")
    return safe_url(text)


def _pyformat(sql: str) -> str:
    """qmark SQL in psycopg's style: ``?`` -> ``%s`` and ``%`` -> ``%%``, outside quotes."""
    parts = _STRING.split(sql)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    return "".join(parts)


class StoreConnection:
    """A connection to a store (SQLite or PostgreSQL) that speaks qmark SQL.

    ``label`` names the store for people (a path, or the URL without password). Reads outside
    :meth:`transaction` see one snapshot in PostgreSQL when opened read-only (a repeatable-read
    transaction held until :meth:`close`), and committed data in SQLite.
    """

    def __init__(self, raw: Any, label: str) -> None:
        self.raw = raw
        self.label = label
        self.dialect = "sqlite" if isinstance(raw, sqlite3.Connection) else "postgresql"

    @classmethod
    def wrap(cls, raw: Any, label: str = "") -> StoreConnection:
        """A sqlite3 or psycopg connection as a :class:`StoreConnection` (idempotent)."""
        return raw if isinstance(raw, StoreConnection) else cls(raw, label)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (always, on a read-only PostgreSQL connection that
        has read: its snapshot)."""
        if self.is_postgres:
            import psycopg

            return bool(self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)
        return bool(self.raw.in_transaction)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self.is_postgres:
            return self.raw.execute(_pyformat(sql), tuple(params))  # type: ignore[no-any-return]
        return self.raw.execute(sql, tuple(params))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.is_postgres:
            with self.raw.cursor() as cur:
                cur.executemany(_pyformat(sql), rows)
        else:
            self.raw.executemany(sql, rows)

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 50_000) -> Iterator[Any]:
        """Rows of a big result, fetched ``size`` at a time (a server-side cursor in
        PostgreSQL, so the client never holds the whole result)."""
        if self.is_postgres:
            with self.raw.cursor(name="flamewatch_stream") as cur:
                cur.itersize = size
                cur.execute(_pyformat(sql), tuple(params))
                while rows := cur.fetchmany(size):
                    yield from rows
            return
        cursor = self.raw.execute(sql, tuple(params))
        while rows := cursor.fetchmany(size):
            yield from rows

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert rows fast: ``COPY`` in PostgreSQL, ``executemany`` in SQLite."""
        names = ", ".join(columns)
        if self.is_postgres:
            with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join("?" for _ in columns)
        self.raw.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)

    @contextmanager
    def transaction(self) -> Iterator[StoreConnection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``, so writers queue, not fail)."""
        if self.is_postgres:
            with self.raw.transaction():
                yield self
            return
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    # -- where the dialects differ --------------------------------------------------------------

    def hour_start(self, column: str) -> str:
        """Unix time of the start of the UTC hour of a Unix time column (SQLite's ``CAST``
        truncates; PostgreSQL's rounds, so it floors)."""
        if self.is_postgres:
            return f"CAST(FLOOR({column} / 3600) AS BIGINT) * 3600"
        return f"CAST({column} / 3600 AS INTEGER) * 3600"

    def unindexed(self, column: str) -> str:
        """A column reference SQLite's planner will not answer from an index (``+col``: a
        full scan is cheaper than an index walk for a whole-table ``GROUP BY``)."""
        return column if self.is_postgres else f"+{column}"

    def tables(self) -> set[str]:
        if self.is_postgres:
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return {name for (name,) in self.execute(sql).fetchall()}

    def close(self) -> None:
        self.raw.close()


@runtime_checkable
class _SQLStore(Protocol):
    def connection(self) -> StoreConnection: ...


def connection_of(store: object) -> StoreConnection:
    """The open connection of a SQLite or PostgreSQL store, as a :class:`StoreConnection`
    (its :meth:`~.sql.SQLStore.connection`)."""
    if not isinstance(store, _SQLStore):
        raise StoreError(f"{store!r} has no SQL connection")
    return store.connection()


def open_connection(database: str, *, readonly: bool = True) -> StoreConnection:
    """Connect to the store named by a path, ``sqlite:///`` or ``postgresql://`` URL.

    Read-only connections check that a flamewatch store is there; raises :class:`StoreError`
    saying what is wrong.
    """
    from . import is_postgres

    if is_postgres(database):
        conn = _connect_postgres(database, readonly)
    else:
        conn = _connect_sqlite(database, readonly)
    if readonly:
        try:
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except Exception as exc:
            conn.close()
            raise StoreError(f"{conn.label!r} is not a readable flamewatch store: {exc}") from None
    return conn


def sqlite_file(database: str) -> Path:
    """The file of a ``sqlite:///`` URL or a plain path."""
    text = database[len("sqlite:///") :] if database.startswith("sqlite:///") else database
    if "://" in text:
        raise StoreError(
            f"{database!r}: give a SQLite file path, a sqlite:///… or a postgresql://… URL"
        )
    return Path(text)


def _connect_sqlite(database: str, readonly: bool) -> StoreConnection:
    from .sqlite import connect_sqlite

    path = sqlite_file(database)
    if not path.is_file():
        raise StoreError(f"no flamewatch store at {str(path)!r}")
    try:
        return StoreConnection(connect_sqlite(path, readonly=readonly), str(path))
    except sqlite3.Error as exc:
        raise StoreError(f"{str(path)!r} is not a readable flamewatch store: {exc}") from None


def _connect_postgres(database: str, readonly: bool) -> StoreConnection:
    from . import resolve_database

    try:
        url = resolve_database(database, ".")
    except ValueError as exc:
        raise StoreError(f"{safe_url(database)}: {exc}") from None
    import psycopg

    from .postgres import connect_postgres

    try:
        raw = connect_postgres(url, autocommit=not readonly)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {safe_url(url)}: {exc}".strip()) from None
    if readonly:  # one consistent snapshot for the whole report, never a write
        raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        raw.read_only = True
    return StoreConnection(raw, safe_url(url))
