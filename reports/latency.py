"""Reading the store's latency histograms, partitioned as the report shows them.

The ``latency`` table holds a histogram per endpoint, version and group (bucket -> count; see
:mod:`flamewatch.sampler.histogram`). Merging histograms adds their counts, so a coarser
histogram is a ``GROUP BY`` away. Two readings, each only as fine as what its views show:

- :func:`read_version_latencies`: per endpoint and version (and, merged from those, per
  endpoint), summed over the groups in the database: the endpoint table, the version boxes and
  every version comparison. At 10^7 requests the table has 929,095 rows and this reading
  returns 47,894; the ``GROUP BY`` costs about what one scan of the rows into Python costs, but
  nothing row by row is left to do in Python and nothing of that size is held in memory.
- :func:`read_group_latencies`: the cells per group, read whole (one scan, merged here): only
  the views of groups need them, and the endpoint page reads one endpoint's rows by the table's
  key. Measured at 10^7 requests, grouping by (endpoint, group, bucket) in SQLite took longer
  (2.0 s) than the scan (1.3 s), since SQLite sorts the table for it.

Both take an optional endpoint id: the endpoint page reads its own rows only (the primary key
starts with ``endpoint_id``). What is read grows with endpoints x versions x groups x buckets,
never with the number of requests.

Group ``0`` holds the requests without a group (the report's ``"unknown"``); group ``-1``, the
groups the writer counted together beyond its cap per endpoint and version (``"others"``):
never a group of its own, always part of the report's ``"others"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection

from .binned import box_of
from .model import Box
from .stats_tests import QUANTILES

__all__ = [
    "CAPPED_GROUPS",
    "NO_GROUP",
    "GroupLatencies",
    "VersionLatencies",
    "read_group_latencies",
    "read_version_latencies",
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
    """Per (endpoint, version) and per endpoint, the histogram of every group's requests."""
    where, args = _of(endpoint_id)
    by_version: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for e, v, bucket, count in conn.execute(
        "SELECT endpoint_id, version_id, bucket, CAST(SUM(count) AS BIGINT) FROM latency"
        + where
        + " GROUP BY endpoint_id, version_id, bucket",
        args,
    ):
        by_version[(e, v)][bucket] = int(count)
    versions = {key: Histogram.from_counts(counts) for key, counts in by_version.items()}
    endpoints: dict[int, Histogram] = defaultdict(Histogram)
    for (e, _), histogram in versions.items():
        endpoints[e].merge(histogram)
    return VersionLatencies(endpoints=dict(endpoints), versions=versions)


def read_group_latencies(
    conn: StoreConnection,
    max_groups: int,
    group_name: Callable[[int], str],
    endpoint_id: int | None = None,
) -> GroupLatencies:
    """Per endpoint, the ``max_groups`` groups with the slowest medians (ties: by
    ``group_name``) kept apart, with their histograms per version; the rest go to ``others``."""
    cells = _cells(conn, endpoint_id)
    by_group: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for (e, _, g), cell in cells.items():
        _add(by_group[(e, g)], cell)
    found: dict[int, list[tuple[float, str, int, Histogram]]] = defaultdict(list)
    others: dict[int, Histogram] = defaultdict(Histogram)
    for (e, g), counts in by_group.items():
        histogram = Histogram.from_counts(counts)
        if g == CAPPED_GROUPS:
            others[e].merge(histogram)
        else:  # slowest median first, then by name
            found[e].append((-histogram.quantile(_MEDIAN), group_name(g), g, histogram))
    groups: dict[int, list[tuple[int, Box]]] = {}
    kept: set[tuple[int, int]] = set()
    for e, candidates in found.items():
        candidates.sort(key=lambda c: c[:2])
        groups[e] = [(g, box_of(histogram)) for _, _, g, histogram in candidates[:max_groups]]
        kept.update((e, g) for g, _ in groups[e])
        for *_, histogram in candidates[max_groups:]:
            others[e].merge(histogram)
    return GroupLatencies(
        groups=groups,
        kept={
            (e, g, v): Histogram.from_counts(cell)
            for (e, v, g), cell in cells.items()
            if (e, g) in kept
        },
        others=dict(others),
    )


def _cells(
    conn: StoreConnection, endpoint_id: int | None
) -> dict[tuple[int, int, int], dict[int, int]]:
    """(endpoint, version, group) -> bucket -> count: the (endpoint's) rows in one scan."""
    where, args = _of(endpoint_id)
    cells: dict[tuple[int, int, int], dict[int, int]] = {}
    for e, v, g, bucket, count in conn.stream(
        "SELECT endpoint_id, version_id, group_id, bucket, count FROM latency" + where, args
    ):
        key = (e, v, g)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = {}
        cell[bucket] = int(count)
    return cells


def _add(into: dict[int, int], counts: dict[int, int]) -> None:
    for bucket, count in counts.items():
        into[bucket] = into.get(bucket, 0) + count
