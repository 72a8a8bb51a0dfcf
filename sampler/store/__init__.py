"""Storage: the :class:`Store` interface, its SQLite backend, and database URLs."""

from __future__ import annotations

import os
from pathlib import Path

from .base import (
    Baseline,
    OutlierCapture,
    ProcessInfo,
    ProfileStack,
    RequestRecord,
    RouteInfo,
    Store,
    StoreError,
)
from .schema import SCHEMA_VERSION
from .sqlite import SQLiteStore, connect_sqlite, open_stores

__all__ = [
    "SCHEMA_VERSION",
    "Baseline",
    "OutlierCapture",
    "ProcessInfo",
    "ProfileStack",
    "RequestRecord",
    "RouteInfo",
    "SQLiteStore",
    "Store",
    "StoreError",
    "connect_sqlite",
    "make_store",
    "open_stores",
    "resolve_database",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def resolve_database(value: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> str:
    """Normalise a database setting to a store URL.

    Accepts a filesystem path or a ``sqlite:///relative`` / ``sqlite:////absolute`` URL;
    relative paths are taken from ``base_dir``. Raises :class:`ValueError` saying what is
    accepted.
    """
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("it is empty; give a file path or a sqlite:///… URL")
    lowered = text.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        raise ValueError(
            "PostgreSQL stores are not yet supported by this version of flamewatch;"
            " use a SQLite file path (the default) for now"
        )
    if lowered.startswith("sqlite:"):
        if not lowered.startswith("sqlite:///"):
            raise ValueError(f"{text!r} is not a SQLite URL of the form sqlite:///path/to/file")
        text = text[len("sqlite:///") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"the scheme {scheme!r} is not supported; give a file path or a sqlite:///… URL"
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


def make_store(url: str) -> Store:
    """The store for a URL made by :func:`resolve_database` (not opened yet)."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    raise StoreError(f"unsupported store URL {url!r}")
