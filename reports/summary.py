"""What a store holds, in a few lines: versions, endpoints, outliers, drops.

The report site goes much further; this is what ``flamewatch summary`` and the demo print,
from the same numbers (:class:`~.aggregate.ReportData`, read from the store's histograms and
traffic counts: a summary costs the same at a billion requests as at a thousand).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flamewatch.sampler.store.connection import StoreConnection, open_connection, sqlite_file

from .aggregate import ReportData

__all__ = ["EndpointSummary", "StoreSummary", "VersionSummary", "format_summary", "summarize"]


@dataclass(frozen=True)
class VersionSummary:
    name: str
    source: str
    first_seen: float
    last_seen: float
    requests: int
    outliers: int


@dataclass(frozen=True)
class EndpointSummary:
    name: str
    rules: list[str]
    monitored: bool
    requests: int
    outliers: int
    median_ms: float | None
    p90_ms: float | None
    last_accessed: float | None


@dataclass(frozen=True)
class StoreSummary:
    path: str
    schema_version: int
    requests: int
    outliers: int
    processes: int
    dropped: int
    versions: list[VersionSummary] = field(default_factory=list)
    endpoints: list[EndpointSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sqlite_path(database: str) -> Path:
    """The file of a ``sqlite:///`` URL or plain path given on the command line."""
    return sqlite_file(database)


@contextmanager
def open_readonly(database: str) -> Iterator[StoreConnection]:
    """A read-only connection to the store at a path, ``sqlite:///`` or ``postgresql://`` URL;
    raises :class:`StoreError` when there is no readable store."""
    conn = open_connection(database, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def summarize(database: str) -> StoreSummary:
    """Read a store's summary; raises :class:`StoreError` when there is no store."""
    with open_readonly(database) as conn:
        return _summarize(conn, conn.label)


def _summarize(conn: StoreConnection, path: str) -> StoreSummary:
    (schema,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    processes, dropped = conn.execute(
        "SELECT count(*), coalesce(sum(dropped), 0) FROM processes"
    ).fetchone()
    data = ReportData(conn)  # the report's own numbers: one definition of a quantile
    versions = [
        VersionSummary(v.name, v.source, v.first_seen, v.last_seen, v.requests, v.outliers)
        for v in data.versions()
    ]
    endpoints = [
        EndpointSummary(
            name=e.name,
            rules=e.rules,
            monitored=e.monitored,
            requests=e.hits,
            outliers=e.outliers,
            median_ms=None if e.box is None else e.box.median,
            p90_ms=None if e.box is None else e.box.p90,
            last_accessed=e.last_accessed,
        )
        for e in data.endpoints()
    ]
    return StoreSummary(
        path=path,
        schema_version=int(schema),
        requests=sum(v.requests for v in versions),
        outliers=sum(v.outliers for v in versions),
        processes=processes,
        dropped=int(dropped),
        versions=versions,
        endpoints=endpoints,
    )


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_summary(summary: StoreSummary) -> str:
    """The summary as text for a terminal."""
    lines = [
        f"store: {summary.path} (schema {summary.schema_version})",
        f"{summary.requests} requests, {summary.outliers} outliers, from {summary.processes}"
        f" process starts; {summary.dropped} records dropped",
        "",
        "versions (oldest first):",
    ]
    for v in summary.versions:
        lines.append(
            f"  {v.name:<14} {v.requests:>8} requests {v.outliers:>5} outliers"
            f"   {_when(v.first_seen)} .. {_when(v.last_seen)}   ({v.source})"
        )
    lines += ["", "endpoints:"]
    width = max([len(e.name) for e in summary.endpoints] + [8])
    lines.append(
        f"  {'endpoint':<{width}} {'rule':<24} {'hits':>8} {'median ms':>10} {'p90 ms':>10}"
        f" {'outliers':>8}  last accessed"
    )
    for e in summary.endpoints:
        rule = ", ".join(e.rules) or "-"
        flag = "" if e.monitored else "  (not monitored)"
        lines.append(
            f"  {e.name:<{width}} {rule:<24} {e.requests:>8} {_ms(e.median_ms):>10}"
            f" {_ms(e.p90_ms):>10} {e.outliers:>8}  {_when(e.last_accessed)}{flag}"
        )
    return "\n".join(lines)
