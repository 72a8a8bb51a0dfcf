"""Connections to a store for what reads it or moves rows in bulk, whatever its backend.

The store classes write through their own drivers; everything that *reads* a store (the
report, ``summary``, ``outliers``) or moves rows in bulk (``copy``, ``prune``) goes through a
:class:`~.dialect.StoreConnection` (qmark SQL on either backend: :mod:`.dialect`), opened here
by :func:`open_connection` from a path or URL, or taken from an open store by
:func:`connection_of`.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol, runtime_checkable

from .base import StoreError
from .dialect import Rows, StoreConnection, driver_errors
from .postgres import connect_postgres
from .sqlite import connect_sqlite
from .urls import is_postgres, resolve_database, safe_url, scrub_secrets, sqlite_file

__all__ = [
    "Rows",
    "StoreConnection",
    "connection_of",
    "driver_errors",
    "open_connection",
    "safe_url",
    "scrub_secrets",
    "sqlite_file",
]


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


def _connect_sqlite(database: str, readonly: bool) -> StoreConnection:
    path = sqlite_file(database)
    if not path.is_file():
        raise StoreError(f"no flamewatch store at {str(path)!r}")
    try:
        return StoreConnection(connect_sqlite(path, readonly=readonly), str(path))
    except sqlite3.Error as exc:
        raise StoreError(f"{str(path)!r} is not a readable flamewatch store: {exc}") from None


def _connect_postgres(database: str, readonly: bool) -> StoreConnection:
    try:
        url = resolve_database(database, ".")
    except ValueError as exc:
        raise StoreError(f"{safe_url(database)}: {exc}") from None
    import psycopg  # noqa: PLC0415 -- optional (flamewatch[postgres])

    try:
        raw = connect_postgres(url, autocommit=not readonly)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to {safe_url(url)}: {exc}".strip()) from None
    if readonly:  # one consistent snapshot for the whole report, never a write
        raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        raw.read_only = True
    return StoreConnection(raw, safe_url(url))
