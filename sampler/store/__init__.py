"""Storage: the :class:`Store` interface, its SQLite and PostgreSQL backends, database URLs."""

from __future__ import annotations

import os
from pathlib import Path

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
from .connection import safe_url, scrub_secrets
from .schema import SCHEMA_VERSION
from .sql import open_sql_stores
from .sqlite import SQLiteStore, connect_sqlite

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
    "resolve_database",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
POSTGRES_INSTALL = "pip install 'flamewatch[postgres]'"


def is_postgres(url: str) -> bool:
    """Whether a database setting or store URL names a PostgreSQL database."""
    return url.strip().lower().startswith(_POSTGRES_SCHEMES)


def _postgres_url(text: str) -> str:
    """A ``postgresql://`` URL checked by psycopg's own parser (which must be installed)."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(
            f"a PostgreSQL store needs psycopg 3, which is not installed: {POSTGRES_INSTALL}"
        ) from None
    url = "postgresql://" + text.split("://", 1)[1]
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:  # with libpq's own words, which may quote the password
        raise ValueError(f"not a valid PostgreSQL URL: {scrub_secrets(str(exc), url)}") from None
    return url


def resolve_database(value: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> str:
    """Normalise a database setting to a store URL.

    Accepts a filesystem path, a ``sqlite:///relative`` / ``sqlite:////absolute`` URL
    (relative paths are taken from ``base_dir``) or a ``postgresql://`` URL (also
    ``postgres://``). Raises :class:`ValueError` saying what is accepted.
    """
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("it is empty; give a file path or a sqlite:///… URL")
    lowered = text.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        return _postgres_url(text)
    if lowered.startswith("sqlite:"):
        if not lowered.startswith("sqlite:///"):
            raise ValueError(f"{text!r} is not a SQLite URL of the form sqlite:///path/to/file")
        text = text[len("sqlite:///") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"the scheme {scheme!r} is not supported; give a file path, a sqlite:///… URL"
            " or a postgresql://… URL"
        )
    if text in ("", ":memory:") or text.startswith("file::memory:"):
        raise ValueError(
            "an in-memory database cannot be shared with flamewatch's writer thread or with"
            " the report; give a file path"
        )
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    return f"sqlite:///{path}"


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
        from .postgres import PostgresStore

        return PostgresStore(url, limits)
    raise StoreError(f"unsupported store URL {safe_url(url)!r}")
