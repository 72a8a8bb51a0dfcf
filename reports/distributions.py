"""The durations the findings compare, as latency histograms: the one place that reads them.

The findings (:mod:`.findings`) need, per endpoint, a histogram of its durations per version
and group (versions compared; one user against the others) and per version and hour (changes
inside a version). They read them from the store's pre-aggregated histograms (schema 4), never
from the request rows, so what is read grows with endpoints x versions x groups x hours:

- ``latency``: per endpoint, version and group -- the version and group comparisons;
- ``latency_hourly``: per endpoint, version and UTC hour -- the series of hourly medians in
  which changes inside a version are looked for.

Requests without a group (``group_id`` 0) and the groups the writer counted together beyond its
cap (``-1``) are kept as the group ``None``: part of "everyone else" in a group's comparison,
never a group of their own.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection
from flamewatch.sampler.version import TEST_SOURCE

__all__ = ["Distributions", "read_distributions", "test_runs", "version_order"]

#: the width of the time buckets in which changes inside a version are looked for: an hour,
#: that of ``latency_hourly``
HOUR_S = 3600.0

CellKey = tuple[str, str, str | None]  # endpoint, version, group (None: no group of its own)


@dataclass(frozen=True)
class Distributions:
    """Histograms of a store's durations, by names."""

    #: versions in deployment order (first seen), oldest first
    versions: list[str]
    #: (endpoint, version, group) -> its durations
    cells: dict[CellKey, Histogram]
    #: (endpoint, version) -> (hour start, durations) in time order
    buckets: dict[tuple[str, str], list[tuple[float, Histogram]]]
    bucket_s: float
    #: the versions recorded by a test suite (``pytest --flamewatch``): compared with the test
    #: run before them, as deployments are with the deployment before them
    test_runs: frozenset[str] = field(default_factory=frozenset)

    def only(self, versions: set[str]) -> Distributions:
        """The durations of ``versions`` alone, as if no other version had been deployed, and
        of one kind: versions named together are compared whatever their kind (a test run
        with a deployment, as ``flamewatch check --against`` asks)."""
        return Distributions(
            [v for v in self.versions if v in versions],
            {key: h for key, h in self.cells.items() if key[1] in versions},
            {key: series for key, series in self.buckets.items() if key[1] in versions},
            self.bucket_s,
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
        return sorted({endpoint for endpoint, _, _ in self.cells})

    def by_version(self, endpoint: str) -> dict[str, Histogram]:
        """Version -> the endpoint's durations of every group."""
        found: dict[str, Histogram] = defaultdict(Histogram)
        for (e, version, _), histogram in self.cells.items():
            if e == endpoint:
                found[version].merge(histogram)
        return dict(found)

    def by_group(self, endpoint: str) -> dict[str, dict[str, Histogram]]:
        """Group -> version -> the group's durations (named groups only)."""
        found: dict[str, dict[str, Histogram]] = defaultdict(dict)
        for (e, version, group), histogram in self.cells.items():
            if e == endpoint and group is not None:
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


def read_distributions(conn: StoreConnection, endpoint: str | None = None) -> Distributions:
    """Every histogram the findings need: one scan of ``latency``, one of ``latency_hourly``;
    with ``endpoint``, that endpoint's rows only (read by the tables' keys, which start with
    the endpoint: the live dashboard's endpoint page)."""
    endpoints = dict(conn.execute("SELECT id, name FROM endpoints").fetchall())
    versions = dict(conn.execute("SELECT id, name FROM versions").fetchall())
    groups = dict(conn.execute("SELECT id, name FROM user_groups").fetchall())
    where: tuple[str, tuple[int, ...]] = ("", ())
    if endpoint is not None:  # ids start at 1: an unknown endpoint has no rows
        ids = {name: endpoint_id for endpoint_id, name in endpoints.items()}
        where = (" WHERE endpoint_id = ?", (ids.get(endpoint, 0),))
    cells: dict[CellKey, dict[int, int]] = defaultdict(dict)
    for e, v, g, bucket, count in conn.stream(
        "SELECT endpoint_id, version_id, group_id, bucket, count FROM latency" + where[0], where[1]
    ):
        counts = cells[(endpoints[e], versions[v], groups.get(g))]  # 0, -1: no group of its own
        counts[bucket] = counts.get(bucket, 0) + int(count)
    hours: dict[tuple[str, str], dict[float, dict[int, int]]] = defaultdict(dict)
    for e, v, hour, bucket, count in conn.stream(
        "SELECT endpoint_id, version_id, hour, bucket, count FROM latency_hourly" + where[0],
        where[1],
    ):
        counts = hours[(endpoints[e], versions[v])].setdefault(float(hour), {})
        counts[bucket] = counts.get(bucket, 0) + int(count)
    series = {
        key: [(hour, Histogram.from_counts(counts)) for hour, counts in sorted(by_hour.items())]
        for key, by_hour in hours.items()
    }
    by_name = {key: Histogram.from_counts(counts) for key, counts in cells.items()}
    return Distributions(version_order(conn), by_name, series, HOUR_S, test_runs(conn))
