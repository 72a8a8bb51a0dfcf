"""Reading the store's latency histograms, partitioned as the report shows them.

The writer keeps a histogram per endpoint, version and group (``latency``; bucket -> count, see
:mod:`flamewatch.sampler.histogram`) and, in the same transaction, the same summed over groups
(``latency_version``, schema 5) and summed over buckets (``group_hits``: requests per endpoint,
version and group). Merging histograms adds their counts. Two readings, each only as fine as
what its views show:

- :func:`read_version_latencies`: per endpoint and version (and, merged from those, per
  endpoint): ``latency_version`` read as it is stored -- the endpoint table, the version boxes
  and every version comparison, a row per endpoint and version. At 10^7 requests it has about
  48,000 rows, where ``latency`` has 929,095 (grouping those in SQL took 1.6 s).
- :func:`read_group_latencies`: per endpoint, the ``max_groups`` groups with the most requests
  (from ``group_hits``: a row per endpoint, version and group), and the ``latency`` rows of
  those groups only; the other groups' requests together ("others") are the endpoint's
  histogram less the kept groups', so no other group's row is read.

Both take an optional endpoint id: the endpoint page reads its own rows only (the primary keys
start with ``endpoint_id``). What is read grows with endpoints x versions x shown groups x
buckets, never with the number of requests or of groups.

Group ``0`` holds the requests without a group (the report's ``"unknown"``); group ``-1``, the
groups the writer counted together beyond its cap per endpoint and version (``"others"``):
never a group of its own, always part of the report's ``"others"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection

from .binned import box_of
from .model import Box
from .stats_tests import QUANTILES

__all__ = [
    "CAPPED_GROUPS",
    "NO_GROUP",
    "GroupCells",
    "GroupLatencies",
    "VersionLatencies",
    "read_group_cells",
    "read_group_latencies",
    "read_version_latencies",
    "top_groups",
]

#: the ``group_id`` of the requests without a group, and of the groups beyond the writer's cap
NO_GROUP, CAPPED_GROUPS = 0, -1
_MEDIAN = QUANTILES["median"]


@dataclass(frozen=True)
class VersionLatencies:
    """The histograms per endpoint id, and per (endpoint id, version id)."""

    endpoints: dict[int, Histogram]
    versions: dict[tuple[int, int], Histogram]


@dataclass(frozen=True)
class GroupLatencies:
    """The histograms of the groups each endpoint's views show apart."""

    #: endpoint -> its kept groups with their boxes, slowest (median) first
    groups: dict[int, list[tuple[int, Box]]]
    #: (endpoint, kept group, version) -> histogram
    kept: dict[tuple[int, int, int], Histogram]
    #: endpoint -> the groups beyond ``max_groups`` and beyond the writer's cap, together
    others: dict[int, Histogram]


def _of(endpoint_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The ``WHERE`` of one endpoint's rows (all rows for ``None``), and its argument."""
    return ("", ()) if endpoint_id is None else (" WHERE endpoint_id = ?", (endpoint_id,))


def read_version_latencies(
    conn: StoreConnection, endpoint_id: int | None = None
) -> VersionLatencies:
    """Per (endpoint, version) and per endpoint, the histogram of every group's requests.

    A row per (endpoint, version), its buckets and counts as two JSON arrays, in the primary
    key's order (no sort): at 10^7 requests 241 rows where the table has 47,913, read and built
    three times faster than from a row per bucket (the index and performance pages read it)."""
    where, args = _of(endpoint_id)
    buckets, counts = conn.json_list("bucket", "bucket"), conn.json_list("count", "bucket")
    versions: dict[tuple[int, int], Histogram] = {}
    for e, v, bucket_list, count_list in conn.execute(
        f"SELECT endpoint_id, version_id, {buckets}, {counts} FROM latency_version{where}"
        " GROUP BY endpoint_id, version_id",
        args,
    ):
        cell = dict(zip(orjson.loads(bucket_list), orjson.loads(count_list), strict=True))
        versions[(e, v)] = Histogram.from_counts(cell)
    merged: dict[int, dict[int, int]] = {}
    for (e, _), histogram in versions.items():
        into = merged.get(e)
        if into is None:  # an endpoint's first version: its buckets copied as they are
            merged[e] = {b: c for b, c in histogram.counts.items() if c}
        else:
            _add(into, histogram.counts)
    return VersionLatencies(
        endpoints={e: Histogram.from_counts(counts) for e, counts in merged.items()},
        versions=versions,
    )


def top_groups(
    conn: StoreConnection,
    max_groups: int,
    group_name: Callable[[int], str],
    endpoint_id: int | None = None,
    *,
    named_only: bool = False,
) -> dict[int, list[int]]:
    """Per endpoint, its ``max_groups`` groups with the most requests (ties: by name), read
    from ``group_hits``; the groups beyond the writer's cap (-1) are never one of them, nor,
    with ``named_only``, the requests without a group (0)."""
    where, args = _of(endpoint_id)
    found: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for e, g, hits in conn.execute(
        "SELECT endpoint_id, group_id, CAST(SUM(hits) AS BIGINT) FROM group_hits"
        + where
        + " GROUP BY endpoint_id, group_id",
        args,
    ):
        if g != CAPPED_GROUPS and hits and not (named_only and g == NO_GROUP):
            found[e].append((-int(hits), group_name(g), g))
    return {e: [g for *_, g in sorted(groups)[:max_groups]] for e, groups in found.items()}


def read_group_cells(
    conn: StoreConnection, groups: dict[int, list[int]]
) -> dict[tuple[int, int, int], Histogram]:
    """(endpoint, version, group) -> the histogram of the ``groups`` of each endpoint: one
    query per endpoint, by the primary key's first column. In the compact form
    (:meth:`~flamewatch.sampler.histogram.Histogram.from_sorted`): at 10^7 requests 3,600
    cells of 100-200 buckets each, the largest part of the versions page's memory as dicts."""
    cells: dict[tuple[int, int, int], Histogram] = {}
    # a row per cell, its buckets and counts as two JSON arrays (the primary key ends with
    # the bucket): 3-4 times faster to build than from a row per bucket. The versions named
    # too, the primary key finds each cell's rows (endpoint, version, group) instead of the
    # endpoint's rows being scanned for the groups': 8 ms where the scan took 14 (the busiest
    # endpoint of a store of 10^7 requests, 15 of its 30 groups)
    buckets, counts = conn.json_list("bucket", "bucket"), conn.json_list("count", "bucket")
    for e, kept in sorted(groups.items()):
        if not kept:
            continue
        marks = ", ".join("?" * len(kept))
        for v, g, bucket_list, count_list in conn.execute(
            f"SELECT version_id, group_id, {buckets}, {counts} FROM latency"
            " WHERE endpoint_id = ? AND version_id IN (SELECT id FROM versions)"
            f" AND group_id IN ({marks}) GROUP BY version_id, group_id",
            (e, *kept),
        ):
            cells[(e, v, g)] = Histogram.from_lists(
                orjson.loads(bucket_list), orjson.loads(count_list)
            )
    return cells


class GroupCells:
    """The groups' cells read so far, so that the boxes per group and the findings, which
    both want each endpoint's busiest groups, read a group's ``latency`` rows once (the
    report wants both: at 10^7 requests they were read twice)."""

    def __init__(self) -> None:
        self._cells: dict[tuple[int, int, int], Histogram] = {}
        self._read: set[tuple[int, int]] = set()

    def read(
        self, conn: StoreConnection, groups: dict[int, list[int]]
    ) -> dict[tuple[int, int, int], Histogram]:
        """:func:`read_group_cells` of ``groups``, reading only the groups not read yet. The
        cells are shared by every caller, as the histograms they become: none changes them
        (merging makes a new histogram)."""
        missing = {e: [g for g in kept if (e, g) not in self._read] for e, kept in groups.items()}
        self._cells.update(read_group_cells(conn, missing))
        self._read.update((e, g) for e, kept in missing.items() for g in kept)
        wanted = {(e, g) for e, kept in groups.items() for g in kept}
        return {key: cell for key, cell in self._cells.items() if (key[0], key[2]) in wanted}


def read_group_latencies(
    conn: StoreConnection,
    max_groups: int,
    group_name: Callable[[int], str],
    versions: VersionLatencies,
    endpoint_id: int | None = None,
    cells_read: GroupCells | None = None,
) -> GroupLatencies:
    """Per endpoint, the ``max_groups`` groups with the most requests kept apart (shown
    slowest median first, ties by ``group_name``), with their histograms per version; the
    rest of the endpoint's requests (``versions`` holds them all) go to ``others``."""
    chosen = top_groups(conn, max_groups, group_name, endpoint_id)
    cells = (cells_read or GroupCells()).read(conn, chosen)
    by_group: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for (e, _, g), cell in cells.items():
        _add(by_group[(e, g)], cell.counts)
    groups: dict[int, list[tuple[int, Box]]] = {}
    others: dict[int, Histogram] = {}
    for e, kept in chosen.items():
        histograms = {g: Histogram.from_counts(by_group.get((e, g), {})) for g in kept}
        order = sorted(kept, key=lambda g: (-histograms[g].quantile(_MEDIAN), group_name(g)))
        groups[e] = [(g, box_of(histograms[g])) for g in order]
        rest = dict(versions.endpoints[e].counts) if e in versions.endpoints else {}
        for histogram in histograms.values():
            for bucket, count in histogram.counts.items():
                rest[bucket] = rest.get(bucket, 0) - count
        if any(count > 0 for count in rest.values()):
            others[e] = Histogram.from_counts({b: c for b, c in rest.items() if c > 0})
    for e, histogram in versions.endpoints.items():  # endpoints with no group but -1
        if e not in chosen and histogram.total:
            others[e] = histogram
    return GroupLatencies(
        groups=groups,
        kept={(e, g, v): cell for (e, v, g), cell in cells.items()},
        others=others,
    )


def _add(into: dict[int, int], counts: dict[int, int]) -> None:
    """Add ``counts`` into ``into`` (no bucket of a count of 0 is added)."""
    get = into.get
    for bucket, count in counts.items():
        if count:
            into[bucket] = get(bucket, 0) + count
