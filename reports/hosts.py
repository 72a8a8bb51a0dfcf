"""Who served the requests: per host and per process (worker), for the utilization page.

Several gunicorn workers on several servers write one store; every request is counted under
the process that served it (``processes``: host, pid, version, agent, heartbeat, drops), in the
``process_hits`` table the writer keeps per process and UTC day (schema 5). This reads that
breakdown with two queries whose cost grows with processes x days, never with the number of
requests.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flamewatch.sampler.store.connection import StoreConnection

__all__ = ["HostRow", "ProcessRow", "host_rows", "process_rows"]


@dataclass(frozen=True)
class ProcessRow:
    """One process start: a worker of one host, running one version."""

    id: int
    hostname: str
    pid: int
    version: str
    agent: str
    started_at: float
    last_seen: float
    requests: int
    outliers: int
    dropped: int


@dataclass(frozen=True)
class HostRow:
    """Every process start of one host together."""

    hostname: str
    processes: int
    requests: int
    outliers: int
    dropped: int
    first_seen: float
    last_seen: float
    versions: list[str] = field(default_factory=list)


def process_rows(conn: StoreConnection) -> list[ProcessRow]:
    """Every process that registered, by host, then start time."""
    counts = {
        process_id: (hits, outliers)
        for process_id, hits, outliers in conn.execute(
            "SELECT process_id, CAST(SUM(hits) AS BIGINT), CAST(SUM(outliers) AS BIGINT)"
            " FROM process_hits GROUP BY process_id"
        ).fetchall()
    }
    rows = conn.execute(
        "SELECT p.id, p.hostname, p.pid, v.name, p.agent, p.started_at, p.last_seen, p.dropped"
        " FROM processes p JOIN versions v ON v.id = p.version_id"
        " ORDER BY p.hostname, p.started_at, p.id"
    ).fetchall()
    return [
        ProcessRow(
            id=id_,
            hostname=hostname,
            pid=pid,
            version=version,
            agent=agent,
            started_at=started_at,
            last_seen=last_seen,
            requests=int(counts.get(id_, (0, 0))[0]),
            outliers=int(counts.get(id_, (0, 0))[1]),
            dropped=int(dropped),
        )
        for id_, hostname, pid, version, agent, started_at, last_seen, dropped in rows
    ]


def host_rows(processes: list[ProcessRow]) -> list[HostRow]:
    """The processes of :func:`process_rows` summed per host, by host name."""
    by_host: dict[str, list[ProcessRow]] = defaultdict(list)
    for process in processes:
        by_host[process.hostname].append(process)
    return [
        HostRow(
            hostname=hostname,
            processes=len(found),
            requests=sum(p.requests for p in found),
            outliers=sum(p.outliers for p in found),
            dropped=sum(p.dropped for p in found),
            first_seen=min(p.started_at for p in found),
            last_seen=max(p.last_seen for p in found),
            versions=sorted({p.version for p in found}),
        )
        for hostname, found in sorted(by_host.items())
    ]
