"""Reading the store's latency histograms, partitioned as the report shows them.

The ``latency`` table holds a histogram per endpoint, version and group (bucket -> count; see
:mod:`flamewatch.sampler.histogram`). The report needs them per endpoint, per version, per group
and per group and version, for the groups it keeps apart. Three ``GROUP BY`` reads give them:
per (endpoint, version), per (endpoint, group), and the (endpoint, group, version) cells of the
kept groups only. What they return grows with endpoints x versions x groups x buckets, never
with the number of requests; merging two histograms adds their counts.

Group ``0`` holds the requests without a group (the report's ``"unknown"``); group ``-1``, the
groups the writer counted together beyond its cap per endpoint and version (``"others"``):
never a group of its own, always part of the report's ``"others"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

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
    versions = _histograms(
        conn.execute(
            "SELECT endpoint_id, version_id, bucket, CAST(SUM(count) AS BIGINT) FROM latency"
            " GROUP BY endpoint_id, version_id, bucket"
        )
    )
    endpoints: dict[int, Histogram] = defaultdict(Histogram)
    for (e, _), histogram in versions.items():
        endpoints[e].merge(histogram)
    by_group = _histograms(
        conn.execute(
            "SELECT endpoint_id, group_id, bucket, CAST(SUM(count) AS BIGINT) FROM latency"
            " GROUP BY endpoint_id, group_id, bucket"
        )
    )
    found: dict[int, list[tuple[float, str, int, Histogram]]] = defaultdict(list)
    others: dict[int, Histogram] = defaultdict(Histogram)
    for (e, g), histogram in by_group.items():
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
        kept=_kept_cells(conn, kept, everything=len(kept) == len(by_group)),
        others=dict(others),
    )


def _kept_cells(
    conn: StoreConnection, kept: set[tuple[int, int]], everything: bool
) -> dict[tuple[int, int, int], Histogram]:
    """(endpoint, group, version) -> histogram, for the kept (endpoint, group) pairs."""
    if not kept:
        return {}
    where = ""
    if not everything:  # ids are ints read from the store: safe to write into the SQL
        ids = ", ".join(str(int(g)) for g in sorted({g for _, g in kept}))
        where = f" WHERE group_id IN ({ids})"
    counts: dict[tuple[int, int, int], dict[int, int]] = defaultdict(dict)
    for e, g, v, bucket, count in conn.execute(
        f"SELECT endpoint_id, group_id, version_id, bucket, count FROM latency{where}"
    ):
        if (e, g) in kept:
            counts[(e, g, v)][bucket] = int(count)
    return {key: Histogram.from_counts(cells) for key, cells in counts.items()}


def _histograms(rows: Iterable[Any]) -> dict[tuple[int, int], Histogram]:
    """``(key, key, bucket, count)`` rows as a histogram per key pair."""
    counts: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for a, b, bucket, count in rows:
        counts[(a, b)][bucket] = int(count)
    return {key: Histogram.from_counts(cells) for key, cells in counts.items()}
