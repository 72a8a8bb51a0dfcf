"""The durations the findings compare, as latency histograms: the one place that reads them.

The findings (:mod:`.findings`) need, per endpoint, a histogram of its durations per version
(versions compared), per version and group (one group against everyone else) and per version
and time bucket (changes inside a version). They read them from the store's pre-aggregated
histograms (schemas 4 and 5), never from the request rows, and each from the coarsest table
that answers, so what is read grows with endpoints x versions x days, never with requests,
groups or hours:

- ``latency_version``: per endpoint and version -- the version comparisons, and "everyone"
  from which a group's comparison takes the group away;
- ``latency``: per endpoint, version and group, for the :data:`COMPARED_GROUPS` named groups
  of each endpoint with the most requests (``group_hits`` picks them) -- no other group's row
  is read;
- ``latency_hourly`` for versions that ran at most :data:`HOURLY_SPAN_S` (first to last seen),
  ``latency_daily`` for longer ones: the series of medians in which changes inside a version
  are looked for -- an hour each where a version is short, a day each where hours would be
  hundreds of buckets.

Requests without a group (``group_id`` 0) and the groups the writer counted together beyond its
cap (``-1``) are never a group of their own: part of "everyone else" in a group's comparison.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection
from flamewatch.sampler.version import TEST_SOURCE

from .latency import GroupCells, VersionLatencies, read_version_latencies, top_groups

__all__ = [
    "COMPARED_GROUPS",
    "HOURLY_SPAN_S",
    "Distributions",
    "read_distributions",
    "test_runs",
    "version_order",
]

#: the width of the time buckets of a short version's series: an hour, that of
#: ``latency_hourly``
HOUR_S = 3600.0
#: ...and of a longer version's: a day, that of ``latency_daily``
DAY_S = 86_400.0
#: the longest a version may have run (first to last seen) to be read by the hour: 3 days,
#: at most 73 hourly buckets per endpoint
HOURLY_SPAN_S = 3 * DAY_S
#: the named groups per endpoint whose comparisons are read (those with the most requests;
#: the report shows as many by default)
COMPARED_GROUPS = 15

CellKey = tuple[str, str, str]  # endpoint, version, group


@dataclass(frozen=True)
class Distributions:
    """Histograms of a store's durations, by names."""

    #: versions in deployment order (first seen), oldest first
    versions: list[str]
    #: (endpoint, version) -> the durations of every group
    totals: dict[tuple[str, str], Histogram]
    #: (endpoint, version, group) -> its durations: the groups compared only
    cells: dict[CellKey, Histogram]
    #: (endpoint, version) -> (bucket start, durations) in time order
    buckets: dict[tuple[str, str], list[tuple[float, Histogram]]]
    #: the width of the buckets of a series (:data:`HOUR_S` unless named in ``widths``)
    bucket_s: float
    #: the versions recorded by a test suite (``pytest --flamewatch``): compared with the test
    #: run before them, as deployments are with the deployment before them
    test_runs: frozenset[str] = field(default_factory=frozenset)
    #: (endpoint, version) -> the width of its series' buckets, where not ``bucket_s``
    widths: dict[tuple[str, str], float] = field(default_factory=dict)

    def only(self, versions: set[str]) -> Distributions:
        """The durations of ``versions`` alone, as if no other version had been deployed, and
        of one kind: versions named together are compared whatever their kind (a test run
        with a deployment, as ``flamewatch check --against`` asks)."""
        return Distributions(
            [v for v in self.versions if v in versions],
            {key: h for key, h in self.totals.items() if key[1] in versions},
            {key: h for key, h in self.cells.items() if key[1] in versions},
            {key: series for key, series in self.buckets.items() if key[1] in versions},
            self.bucket_s,
            widths={key: w for key, w in self.widths.items() if key[1] in versions},
        )

    def of_one_kind(self) -> list[list[str]]:
        """The versions in deployment order, split by kind: deployments, then test runs.
        Durations of a suite on a CI machine and of production on its servers are not
        compared unless asked for (:meth:`only`), as in :class:`~.aggregate.ReportData`."""
        kinds = [
            [v for v in self.versions if v not in self.test_runs],
            [v for v in self.versions if v in self.test_runs],
        ]
        return [kind for kind in kinds if kind]

    def endpoints(self) -> list[str]:
        return sorted({endpoint for endpoint, _ in self.totals})

    def width(self, endpoint: str, version: str) -> float:
        """The width of the buckets of a version's series of an endpoint, in seconds."""
        return self.widths.get((endpoint, version), self.bucket_s)

    def by_version(self, endpoint: str) -> dict[str, Histogram]:
        """Version -> the endpoint's durations of every group."""
        return {version: h for (e, version), h in self.totals.items() if e == endpoint}

    def by_group(self, endpoint: str) -> dict[str, dict[str, Histogram]]:
        """Group -> version -> the group's durations (the groups compared)."""
        found: dict[str, dict[str, Histogram]] = defaultdict(dict)
        for (e, version, group), histogram in self.cells.items():
            if e == endpoint:
                found[group][version] = histogram
        return dict(found)


def test_runs(conn: StoreConnection) -> frozenset[str]:
    """The names of the versions a test suite recorded."""
    return frozenset(
        name
        for (name,) in conn.execute(
            "SELECT name FROM versions WHERE source = ?", (TEST_SOURCE,)
        ).fetchall()
    )


def version_order(conn: StoreConnection) -> list[str]:
    """Version names in deployment order: first seen, then id."""
    return [
        name
        for (name,) in conn.execute("SELECT name FROM versions ORDER BY first_seen, id").fetchall()
    ]


def read_distributions(
    conn: StoreConnection,
    endpoint: str | None = None,
    cells_read: GroupCells | None = None,
    version_latencies: VersionLatencies | None = None,
) -> Distributions:
    """Every histogram the findings need (see the module's text); with ``endpoint``, that
    endpoint's rows only (read by the tables' keys, which start with the endpoint: the live
    dashboard's endpoint page); ``cells_read``: the groups' cells read for the boxes too;
    ``version_latencies``: ``latency_version`` as the report read it for its tables (of the
    same endpoint or all), not read a second time."""
    endpoints = dict(conn.execute("SELECT id, name FROM endpoints").fetchall())
    versions = dict(conn.execute("SELECT id, name FROM versions").fetchall())
    groups = dict(conn.execute("SELECT id, name FROM user_groups").fetchall())
    endpoint_id: int | None = None
    if endpoint is not None:  # ids start at 1: an unknown endpoint has no rows
        ids = {name: e for e, name in endpoints.items()}
        endpoint_id = ids.get(endpoint, 0)
    if version_latencies is None:
        version_latencies = read_version_latencies(conn, endpoint_id)
    totals = {
        (endpoints[e], versions[v]): histogram
        for (e, v), histogram in version_latencies.versions.items()
    }
    compared = top_groups(
        conn, COMPARED_GROUPS, lambda g: groups.get(g, ""), endpoint_id, named_only=True
    )
    cells = {
        (endpoints[e], versions[v], groups[g]): histogram
        for (e, v, g), histogram in (cells_read or GroupCells()).read(conn, compared).items()
    }
    series, widths = _read_series(conn, endpoints, versions, endpoint_id)
    return Distributions(
        version_order(conn),
        totals,
        cells,
        series,
        HOUR_S,
        test_runs(conn),
        widths,
    )


def _of(endpoint_id: int | None) -> tuple[str, tuple[int, ...]]:
    return ("", ()) if endpoint_id is None else (" WHERE endpoint_id = ?", (endpoint_id,))


def _read_series(
    conn: StoreConnection,
    endpoints: dict[int, str],
    versions: dict[int, str],
    endpoint_id: int | None,
) -> tuple[dict[tuple[str, str], list[tuple[float, Histogram]]], dict[tuple[str, str], float]]:
    """Each (endpoint, version)'s series: hourly for the versions that ran at most
    :data:`HOURLY_SPAN_S`, daily for the others; and the width of each daily one."""
    short: list[int] = []
    long: list[int] = []
    for v, first, last in conn.execute("SELECT id, first_seen, last_seen FROM versions"):
        (short if float(last) - float(first) <= HOURLY_SPAN_S else long).append(int(v))
    by_time: dict[tuple[str, str], dict[float, Histogram]] = defaultdict(dict)
    widths: dict[tuple[str, str], float] = {}
    # a row per time bucket, its buckets and counts as two JSON arrays: 3,837 rows at 10^7
    # requests where the table has 563,218, built 3-4 times faster than from those rows
    buckets, counts = conn.json_list("bucket", "bucket"), conn.json_list("count", "bucket")
    for table, column, ids in (("latency_hourly", "hour", short), ("latency_daily", "day", long)):
        if not ids or not endpoints:
            continue
        where, args = _of(endpoint_id)
        if table == "latency_hourly" and endpoint_id is None:
            # the key starts (endpoint_id, version_id): naming every endpoint makes the few
            # short versions' rows a lookup, where "version_id IN" alone scanned the whole
            # table (4.3 million rows at 10^7 requests, 0.3-0.45 s, for a version's 22)
            where = f" WHERE endpoint_id IN ({', '.join('?' * len(endpoints))})"
            args = tuple(sorted(endpoints))
        marks = ", ".join("?" * len(ids))
        where += (" AND " if where else " WHERE ") + f"version_id IN ({marks})"
        for e, v, start, bucket_list, count_list in conn.execute(
            f"SELECT endpoint_id, version_id, {column}, {buckets}, {counts} FROM {table}"
            + where
            + f" GROUP BY endpoint_id, version_id, {column}",
            (*args, *ids),
        ):
            key = (endpoints[e], versions[v])
            # the primary key ends with the bucket: one row per bucket of a time bucket, in
            # the key's order as SQLite scans it (PostgreSQL sorts), checked all the same
            by_time[key][float(start)] = Histogram.from_lists(
                orjson.loads(bucket_list), orjson.loads(count_list)
            )
            if column == "day":
                widths[key] = DAY_S
    series = {key: sorted(by_start.items()) for key, by_start in by_time.items()}
    return series, widths
