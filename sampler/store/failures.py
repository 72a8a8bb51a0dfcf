"""Telling a store that is away from a batch that holds something the store refuses.

The writer treats the two differently. A store that is *away* -- the server gone, the file
locked past the busy timeout, the disk full, a disk I/O error, the file not a database any
more -- will take the same batch later: the records wait (up to the queue's cap) and the write
is retried with back-off. A batch that is *refused* -- a value the driver cannot encode, a value
too long for an index, a constraint the rows break -- would be refused forever: the writer
splits it to store every record it can and counts the rest as dropped.
"""

from __future__ import annotations

import sqlite3

from .base import StoreError

__all__ = ["failure_reason", "is_store_away"]

# SQLSTATE classes that are about the data, not the server: data exception, integrity
# constraint violation, program limit exceeded (an index row too large)
_REFUSED_CLASSES = frozenset({"22", "23", "54"})
# sqlite3's errors about the values bound, not the file
_SQLITE_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)
_MAX_REASON_CHARS = 200


def is_store_away(exc: BaseException) -> bool:
    """Whether a failed write means the store cannot be written now (retry the same batch
    later) rather than that the batch holds a record the store refuses (split it)."""
    if isinstance(exc, (StoreError, OSError)):
        return True
    if isinstance(exc, sqlite3.Error):
        # OperationalError (locked, busy, disk I/O, full, cannot open, read-only, no such
        # table) and DatabaseError (not a database, malformed) are about the file
        return not isinstance(exc, (*_SQLITE_REFUSED, sqlite3.ProgrammingError))
    try:
        import psycopg  # noqa: PLC0415 -- optional (flamewatch[postgres])
    except ImportError:  # pragma: no cover - then no PostgreSQL store was written either
        return False
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state:  # the server's verdict: a data class, or the server/connection is the matter
            return state[:2] not in _REFUSED_CLASSES
        # raised by psycopg itself: a lost connection, or a value it cannot send (NUL)
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return False  # UnicodeEncodeError, OverflowError, orjson's TypeError: a value of the batch


def failure_reason(exc: BaseException) -> str:
    """Why a write failed, in words that carry no stored value: the error's class and its
    message without detail lines (a server's DETAIL may quote the row), cut short."""
    if isinstance(exc, UnicodeError):
        text = getattr(exc, "reason", "") or str(exc)
    else:
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        text = primary if isinstance(primary, str) and primary else str(exc).split("\n", 1)[0]
    text = text.encode("utf-8", "replace").decode()
    if len(text) > _MAX_REASON_CHARS:
        text = text[:_MAX_REASON_CHARS] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
