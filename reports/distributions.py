"""The durations the findings compare, as latency histograms: the one place that reads them.

The findings (:mod:`.findings`) need, per endpoint, a histogram of its durations per version
and group (versions compared; one user against the others) and per version and time bucket
(changes inside a version). They get them from :func:`read_distributions` only, as
:class:`~flamewatch.sampler.histogram.Histogram` objects, so where the numbers come from can
change without touching the tests themselves: today one streamed scan of the request rows
fills the histograms; a store with pre-aggregated histograms (``latency``: per endpoint x
version x group; ``latency_hourly``: per endpoint x version x hour) answers the same question
by summing their counts, for buckets of whole hours.

Requests without a group are kept as the group ``None``: part of "everyone else" in a group's
comparison, never a group of their own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection

__all__ = ["Distributions", "read_distributions", "version_order"]

#: the width of the time buckets in which changes inside a version are looked for
HOUR_S = 3600.0

CellKey = tuple[str, str, str | None]  # endpoint, version, group (None: no group of its own)


@dataclass(frozen=True)
class Distributions:
    """Histograms of a store's durations, by names."""

    #: versions in deployment order (first seen), oldest first
    versions: list[str]
    #: (endpoint, version, group) -> its durations
    cells: dict[CellKey, Histogram]
    #: (endpoint, version) -> (bucket start, durations) in time order, buckets of ``bucket_s``
    buckets: dict[tuple[str, str], list[tuple[float, Histogram]]]
    bucket_s: float

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


def version_order(conn: StoreConnection) -> list[str]:
    """Version names in deployment order: first seen, then id."""
    return [
        name
        for (name,) in conn.execute("SELECT name FROM versions ORDER BY first_seen, id").fetchall()
    ]


def read_distributions(conn: StoreConnection, bucket_s: float = HOUR_S) -> Distributions:
    """Every histogram the findings need, in one streamed read of the request rows.

    ``bucket_s`` is the width of the time buckets (an hour by default; shorter buckets serve
    short histories such as a test run)."""
    if not bucket_s > 0 or math.isinf(bucket_s):
        raise ValueError(f"a time bucket must last a positive number of seconds, not {bucket_s}")
    endpoints = dict(conn.execute("SELECT id, name FROM endpoints").fetchall())
    versions = dict(conn.execute("SELECT id, name FROM versions").fetchall())
    groups = dict(conn.execute("SELECT id, name FROM user_groups").fetchall())
    cells: dict[tuple[int, int, int | None], Histogram] = {}
    timed: dict[tuple[int, int, int], Histogram] = {}
    rows = conn.stream(
        "SELECT endpoint_id, version_id, group_id, started_at, duration_ms FROM requests"
    )
    for e, v, g, started_at, ms in rows:
        cell = cells.get((e, v, g))
        if cell is None:
            cell = cells[(e, v, g)] = Histogram()
        cell.add(ms)
        key = (e, v, int(started_at // bucket_s))
        bucket = timed.get(key)
        if bucket is None:
            bucket = timed[key] = Histogram()
        bucket.add(ms)
    by_name: dict[CellKey, Histogram] = {}
    for (e, v, g), histogram in cells.items():
        group = None if g is None else groups[g]
        by_name[(endpoints[e], versions[v], group)] = histogram
    series: dict[tuple[str, str], list[tuple[float, Histogram]]] = defaultdict(list)
    for (e, v, index), histogram in sorted(timed.items()):
        series[(endpoints[e], versions[v])].append((index * bucket_s, histogram))
    return Distributions(version_order(conn), by_name, dict(series), bucket_s)
