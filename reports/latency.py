"""Reading the store's latency histograms, partitioned as the report shows them.

The ``latency`` table holds a histogram per endpoint, version and group (bucket -> count; see
:mod:`flamewatch.sampler.histogram`). The report needs them per endpoint, per version, per group
and per group and version, for the groups it keeps apart. One scan of the table reads them all
and merges them here (merging two histograms adds their counts): measured on a table of 720,000
rows, a scan and the merges take about a third of the time of SQLite's ``GROUP BY`` per
partition, which sorts the table each time. What is read grows with endpoints x versions x
groups x buckets, never with the number of requests.

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

__all__ = ["CAPPED_GROUPS", "NO_GROUP", "Latencies", "read_latencies"]

#: the ``group_id`` of the requests without a group, and of the groups beyond the writer's cap
NO_GROUP, CAPPED_GROUPS = 0, -1
_MEDIAN = QUANTILES["median"]


@dataclass(frozen=True)
class Latencies:
    """Every histogram a report shows, by endpoint id (and version id, group id)."""

    endpoints: dict[int, Histogram]
    versions: dict[tuple[int, int], Histogram]
    #: endpoint -> its kept groups with their boxes, slowest (median) first
    groups: dict[int, list[tuple[int, Box]]]
    #: (endpoint, kept group, version) -> histogram
    kept: dict[tuple[int, int, int], Histogram]
    #: endpoint -> the groups beyond ``max_groups`` and beyond the writer's cap, together
    others: dict[int, Histogram]


def read_latencies(
    conn: StoreConnection, max_groups: int, group_name: Callable[[int], str]
) -> Latencies:
    """The histograms of a store; per endpoint, the ``max_groups`` groups with the slowest
    medians (ties: by ``group_name``) are kept apart, the rest go to ``others``."""
    cells = _cells(conn)
    by_version: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    by_group: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for (e, v, g), cell in cells.items():
        _add(by_version[(e, v)], cell)
        _add(by_group[(e, g)], cell)
    versions = {key: Histogram.from_counts(counts) for key, counts in by_version.items()}
    endpoints: dict[int, Histogram] = defaultdict(Histogram)
    for (e, _), histogram in versions.items():
        endpoints[e].merge(histogram)
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
    return Latencies(
        endpoints=dict(endpoints),
        versions=versions,
        groups=groups,
        kept={
            (e, g, v): Histogram.from_counts(cell)
            for (e, v, g), cell in cells.items()
            if (e, g) in kept
        },
        others=dict(others),
    )


def _cells(conn: StoreConnection) -> dict[tuple[int, int, int], dict[int, int]]:
    """(endpoint, version, group) -> bucket -> count: the whole table in one scan (cheaper
    than a sorting ``GROUP BY`` per partition; the partitions are merged here)."""
    cells: dict[tuple[int, int, int], dict[int, int]] = {}
    for e, v, g, bucket, count in conn.stream(
        "SELECT endpoint_id, version_id, group_id, bucket, count FROM latency"
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
