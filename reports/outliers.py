"""Reading captured outliers and their profiles back from a store.

A listing (:func:`list_outliers`) is read a few rows at a time and keeps each outlier's version,
group, method and path cut to :data:`~.text.LIMIT` characters (marked), its endpoint whole but
one copy per endpoint: an outlier's stored request may hold megabytes (its params, its group),
and a site lists every outlier, so what a listing holds must not grow with what each one
stored. :func:`load_outlier` reads one outlier whole.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from pyinstrument.session import Session

from flamewatch.sampler.store import StoreError
from flamewatch.sampler.store.connection import StoreConnection

from .summary import open_readonly
from .text import shorten

__all__ = ["OutlierRow", "list_outliers", "load_outlier", "load_session", "session_of"]

Database = str | StoreConnection  # a path or URL, or a connection already open
#: outliers read from the store at a time by a listing
_LISTING_BATCH = 16


@dataclass(frozen=True)
class OutlierRow:
    """One captured outlier as listed: the endpoint whole (pages are found by it), the other
    names and the path cut to :data:`~.text.LIMIT` (marked)."""

    id: int
    started_at: float
    endpoint: str
    version: str
    group: str | None
    method: str
    status: int
    duration_ms: float
    threshold_ms: float | None
    sample_count: int
    profile_bytes: int
    path: str | None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = datetime.fromtimestamp(self.started_at, timezone.utc).isoformat(
            timespec="milliseconds"
        )
        data["started_at_unix"] = self.started_at
        data["has_profile"] = self.profile_bytes > 0
        return data


_COLUMNS = """
SELECT o.id, r.started_at, e.name, v.name, g.name, r.method, r.status, r.duration_ms,
       r.threshold_ms, o.sample_count, o.profile_bytes"""
_DETAILS = ", o.request_json, o.resources_json, o.threshold_stack_json, o.profile, o.note"
#: the stored request's path, as JSON text (NULL when there is none), read in the database: a
#: listing never reads a whole stored request, which may be megabytes. PostgreSQL's ``->``
#: keeps the text as stored (``->>`` would refuse a path holding ``\u0000``).
_PATH = {
    "sqlite": ", o.request_json -> '$.path'",
    "postgresql": ", (o.request_json::json -> 'path')::text",
}
#: the captured outliers drive the join: ``requests`` is only probed by its primary key, once
#: per outlier, so a listing costs what it lists, never what the store holds. Written as an
#: inner join, SQLite's planner read ``requests`` in ``started_at`` order (to skip the sort)
#: and probed ``outliers`` once per stored request: 3.6 s on a store of 10^7 requests and no
#: outlier. ``CROSS JOIN`` is SQLite's way to fix the order of two tables; PostgreSQL reads it
#: as the inner join it is and orders the tables by its statistics (``outliers`` is the small
#: one). The join condition is in each query's ``WHERE``.
_FROM = """
FROM outliers o
CROSS JOIN requests r
JOIN endpoints e ON e.id = r.endpoint_id
JOIN versions v ON v.id = r.version_id
LEFT JOIN user_groups g ON g.id = r.group_id
"""
_JOINED = "r.id = o.request_id"


@contextmanager
def _reading(database: Database) -> Iterator[StoreConnection]:
    if isinstance(database, StoreConnection):
        yield database
        return
    with open_readonly(database) as conn:
        yield conn


def list_outliers(
    database: Database,
    *,
    endpoint: str | None = None,
    version: str | None = None,
    limit: int | None = None,
) -> list[OutlierRow]:
    """Captured outliers, newest first, optionally of one endpoint and/or version.

    Their order is read first (ids only: the database sorts nothing bigger), then the rows
    :data:`_LISTING_BATCH` at a time, so only their bounded rows are ever held together."""
    where, args = [_JOINED], []
    if endpoint is not None:
        where.append("e.name = ?")
        args.append(endpoint)
    if version is not None:
        where.append("v.name = ?")
        args.append(version)
    order = "SELECT o.id" + _FROM + " WHERE " + " AND ".join(where)
    order += " ORDER BY r.started_at DESC, o.id DESC"
    if limit is not None:
        order += f" LIMIT {int(limit)}"
    with _reading(database) as conn:
        ids = [row[0] for row in conn.execute(order, args).fetchall()]
        endpoints: dict[str, str] = {}  # one copy of each name, not one per row
        listed: list[OutlierRow] = []
        for start in range(0, len(ids), _LISTING_BATCH):
            batch = ids[start : start + _LISTING_BATCH]
            sql = _COLUMNS + _PATH[conn.dialect] + _FROM
            sql += f" WHERE {_JOINED} AND o.id IN ({', '.join('?' * len(batch))})"
            found = {
                values[0]: _row(values[:11], _path(values[11]), endpoints)
                for values in conn.execute(sql, batch).fetchall()
            }
            listed += [found[i] for i in batch if i in found]
        return listed


def _path(stored: str | None) -> Any:
    return None if stored is None else orjson.loads(stored)


def _row(values: tuple[Any, ...], path: Any, endpoints: dict[str, str] | None = None) -> OutlierRow:
    """An outlier's listed row from its columns and its stored path (what JSON holds)."""
    (id_, started_at, endpoint, version, group, method, status, duration, threshold) = values[:9]
    sample_count, profile_bytes = values[9:11]
    return OutlierRow(
        id=id_,
        started_at=started_at,
        endpoint=endpoint if endpoints is None else endpoints.setdefault(endpoint, endpoint),
        version=shorten(version),
        group=None if group is None else shorten(group),
        method=shorten(method),
        status=status,
        duration_ms=duration,
        threshold_ms=threshold,
        sample_count=sample_count,
        profile_bytes=profile_bytes,
        path=shorten(path) if isinstance(path, str) else None,
    )


def load_outlier(database: Database, outlier_id: int) -> dict[str, Any]:
    """Everything stored about one outlier (its profile left compressed, as ``profile``)."""
    with _reading(database) as conn:
        values = conn.execute(
            _COLUMNS + _DETAILS + _FROM + f" WHERE {_JOINED} AND o.id = ?", (outlier_id,)
        ).fetchone()
    if values is None:
        label = database.label if isinstance(database, StoreConnection) else database
        raise StoreError(f"no outlier with id {outlier_id} in {label}")
    request_json, resources_json, stack_json, profile, note = values[11:]
    request = orjson.loads(request_json)
    return {
        "row": _row(values[:11], request.get("path")),
        "request": request,
        "resources": orjson.loads(resources_json),
        "threshold_stack": orjson.loads(stack_json) if stack_json else None,
        "profile": None if profile is None else bytes(profile),
        "note": note,
    }


def load_session(database: Database, outlier_id: int) -> Session:
    """The pyinstrument session of one outlier."""
    return session_of(load_outlier(database, outlier_id))


def session_of(outlier: dict[str, Any]) -> Session:
    """The pyinstrument session of an outlier read by :func:`load_outlier`."""
    if outlier["profile"] is None:
        reason = outlier["note"] or "none was captured"
        raise StoreError(f"outlier {outlier['row'].id} has no profile ({reason})")
    session: Session = Session.from_json(orjson.loads(gzip.decompress(outlier["profile"])))
    return session
