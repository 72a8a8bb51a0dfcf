"""Storage: the :class:`Store` interface, its SQLite and PostgreSQL backends, database URLs."""

from __future__ import annotations

from flamewatch.sampler.storable import Limits

from .base import (
    Baseline,
    OutlierCapture,
    ProcessInfo,
    ProfileStack,
    RequestFields,
    RequestRecord,
    RouteInfo,
    Store,
    StoreError,
)
from .postgres import PostgresStore
from .schema import SCHEMA_VERSION
from .sql import open_sql_stores, read_monitor_flags
from .sqlite import SQLiteStore, connect_sqlite
from .urls import POSTGRES_INSTALL, is_postgres, resolve_database, safe_url

__all__ = [
    "POSTGRES_INSTALL",
    "SCHEMA_VERSION",
    "Baseline",
    "OutlierCapture",
    "ProcessInfo",
    "ProfileStack",
    "RequestFields",
    "RequestRecord",
    "RouteInfo",
    "SQLiteStore",
    "Store",
    "StoreError",
    "connect_sqlite",
    "is_postgres",
    "make_store",
    "open_stores",
    "read_monitor_flags",
    "resolve_database",
]


def open_stores() -> list[Store]:
    """The stores of this process whose connection is open, of every backend (tests check
    none leaks)."""
    return list(open_sql_stores())


def make_store(url: str, limits: Limits | None = None) -> Store:
    """The store for a URL made by :func:`resolve_database` (not opened yet), writing within
    ``limits`` (the defaults when None)."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :], limits)
    if is_postgres(url):
        return PostgresStore(url, limits)
    raise StoreError(f"unsupported store URL {safe_url(url)!r}")
