"""Everything the report shows: :class:`ReportData`.

A store holds millions of requests; a report page needs a few numbers per endpoint, version
and group. Counts (hits, outliers, recent hits, hits per hour) are ``GROUP BY`` queries in the
database. Order statistics come from :class:`~.sweep.Durations`: one streamed, unsorted read of
every duration into compact sorted arrays, from which each grouping's boxes and each version
pair's Mann-Whitney rank sums are read (:mod:`.sweep`, :mod:`.stats_tests`). This module names
those numbers, orders them (versions in deployment order, groups slowest first) and turns them
into version comparisons. Memory grows by 8 bytes per request while a report is built; page
sizes depend on endpoints x versions x groups, never on the number of requests.

The SQL is standard, run through :class:`~flamewatch.sampler.store.connection.StoreConnection`
on SQLite and PostgreSQL alike; where the two differ (the start of a timestamp's hour) the
connection writes the expression. Results are computed once per :class:`ReportData`, on first
use, and cached.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

from flamewatch.sampler.store.connection import StoreConnection
from flamewatch.sampler.version import TEST_SOURCE

from .model import Box, Change, EndpointRow, HourlyHits, VersionRow
from .stats_tests import mann_whitney_p, median_ci_ranks, ratio, verdict
from .sweep import NO_GROUP, Durations, Key, Ranked, rank, rank_sum

__all__ = ["HOUR_START_SQL", "MIN_CHANGE_REQUESTS", "ReportData"]

#: the fewest requests on each side of a version comparison
MIN_CHANGE_REQUESTS = 10
#: the group of requests stored without one, and the box of the groups beyond ``max_groups``
UNKNOWN_GROUP, OTHER_GROUPS = "unknown", "others"
#: Unix time of the start of the UTC hour of ``started_at``, in SQLite (its CAST truncates;
#: PostgreSQL's rounds, see :meth:`StoreConnection.hour_start`).
HOUR_START_SQL = "CAST(started_at / 3600 AS INTEGER) * 3600"

_DAY, _WEEK = 86_400.0, 7 * 86_400.0


@dataclass(frozen=True)
class _Sweep:
    """Every box and rank sum of a report, computed together over one copy of the durations."""

    endpoints: dict[Key, Ranked]  # (endpoint,)
    versions: dict[Key, Ranked]  # (endpoint, version)
    groups: dict[int, list[tuple[int, Box]]]  # endpoint -> all (group, box), slowest first
    kept: dict[Key, Ranked]  # (endpoint, kept group, version)
    others: dict[int, Ranked]  # endpoint -> the groups beyond max_groups together
    rank_sums: dict[tuple[int, int, int], tuple[float, int]]  # (endpoint, old, new) -> sums


@dataclass(frozen=True)
class _Totals:
    hits: int = 0
    outliers: int = 0
    last_day: int = 0
    last_week: int = 0

    def __add__(self, other: _Totals) -> _Totals:
        return _Totals(
            self.hits + other.hits,
            self.outliers + other.outliers,
            self.last_day + other.last_day,
            self.last_week + other.last_week,
        )


class ReportData:
    """The numbers of a report, read from a store's connection (read-only is enough): a
    :class:`StoreConnection` (SQLite or PostgreSQL) or a plain ``sqlite3.Connection``.

    ``now`` anchors "last day/week" (default: the time of construction). A version comparison
    (:class:`Change`) needs :data:`MIN_CHANGE_REQUESTS` requests on each side; its verdict uses
    ``change_threshold`` (the smallest relevant change of the median, 0.2 = 20 %) and ``alpha``
    (the significance level). Per endpoint, the ``max_groups`` slowest groups get their own
    box; the rest share one, ``"others"``. These settings stay readable as attributes.

    An endpoint's ``change`` is the change of the latest version it ran in against the one
    before; ``None`` when either has fewer than :data:`MIN_CHANGE_REQUESTS` requests (an older
    change is not shown instead). Requests without a group are the group ``"unknown"``.
    """

    def __init__(
        self,
        conn: Any,
        *,
        now: float | None = None,
        change_threshold: float = 0.2,
        max_groups: int = 15,
        alpha: float = 0.01,
    ) -> None:
        self._conn = StoreConnection.wrap(conn)  # a sqlite3 connection is taken as it is
        self.now = time.time() if now is None else now
        self.change_threshold = change_threshold
        self.max_groups = max_groups
        self.alpha = alpha

    # -- the contract ------------------------------------------------------------------------

    def endpoints(self) -> list[EndpointRow]:
        """Every endpoint in the store, requested or not, by name."""
        totals: dict[int, _Totals] = defaultdict(_Totals)
        for (endpoint_id, _), counts in self._totals.items():
            totals[endpoint_id] += counts
        rules: dict[int, list[str]] = defaultdict(list)
        methods: dict[int, set[str]] = defaultdict(set)
        for endpoint_id, rule, joined in self._conn.execute(
            "SELECT endpoint_id, rule, methods FROM rules ORDER BY rule"
        ):
            rules[endpoint_id].append(rule)
            methods[endpoint_id].update(m for m in joined.split(",") if m)
        latest = self._latest_changes
        rows = []
        for endpoint_id, name, monitored, last_accessed in self._conn.execute(
            "SELECT id, name, monitored, last_accessed FROM endpoints ORDER BY name"
        ).fetchall():
            counts = totals[endpoint_id]
            ranked = self._sweep.endpoints.get((endpoint_id,))
            rows.append(
                EndpointRow(
                    name=name,
                    rules=rules[endpoint_id],
                    methods=sorted(methods[endpoint_id]),
                    monitored=bool(monitored),
                    hits=counts.hits,
                    hits_last_day=counts.last_day,
                    hits_last_week=counts.last_week,
                    box=None if ranked is None else ranked.box,
                    outliers=counts.outliers,
                    last_accessed=last_accessed,
                    change=latest.get(endpoint_id),
                )
            )
        return rows

    def versions(self) -> list[VersionRow]:
        """Every version in deployment order, with its changes against the previous one."""
        totals: dict[int, _Totals] = defaultdict(_Totals)
        for (_, version_id), counts in self._totals.items():
            totals[version_id] += counts
        by_version: dict[str, list[Change]] = defaultdict(list)
        for change in self.changes():
            by_version[change.version].append(change)
        return [
            VersionRow(
                name=name,
                source=source,
                first_seen=first_seen,
                last_seen=last_seen,
                requests=totals[version_id].hits,
                outliers=totals[version_id].outliers,
                changes=sorted(by_version[name], key=lambda c: c.endpoint),
            )
            for version_id, name, source, first_seen, last_seen in self._versions
        ]

    def changes(self) -> list[Change]:
        """Each endpoint's consecutive versions compared, by endpoint name, then deployment."""
        return [change for _, change in sorted(self._changes.items(), key=self._pair_order)]

    def hourly_hits(self) -> list[HourlyHits]:
        """Requests per endpoint per UTC hour, by endpoint name, then hour."""
        hits: dict[tuple[int, int], int] = defaultdict(int)
        for e, _, hour, counts in self._activity:
            hits[(e, hour)] += counts.hits
        names = self._endpoint_names
        return sorted(
            (HourlyHits(names[e], hour, count) for (e, hour), count in hits.items()),
            key=lambda h: (h.endpoint, h.hour),
        )

    def box_by_endpoint(self) -> dict[str, Box]:
        """The box of each requested endpoint's durations."""
        names = self._endpoint_names
        return {names[e]: ranked.box for (e,), ranked in self._sorted(self._sweep.endpoints)}

    def boxes_by_version(self) -> dict[str, list[tuple[str, Box]]]:
        """Per endpoint, a box per version it ran in, in deployment order."""
        result: dict[str, list[tuple[str, Box]]] = {}
        for (e, v), ranked in self._sorted(self._sweep.versions, version_at=1):
            result.setdefault(self._endpoint_names[e], []).append(
                (self._version_names[v], ranked.box)
            )
        return result

    def boxes_by_group(self) -> dict[str, list[tuple[str, Box]]]:
        """Per endpoint, the ``max_groups`` slowest groups (by median) with their boxes, then
        ``("others", box)`` of all the remaining groups' requests, if any remain."""
        result = {
            self._endpoint_names[e]: [(self._group_name(g), box) for g, box in kept]
            for e, kept in sorted(self._kept_groups.items(), key=lambda i: self._endpoint_key(i[0]))
        }
        for e, ranked in sorted(self._sweep.others.items()):
            result[self._endpoint_names[e]].append((OTHER_GROUPS, ranked.box))
        return result

    def boxes_by_group_version(self) -> dict[str, dict[str, list[tuple[str, Box]]]]:
        """Per endpoint, per group kept by :meth:`boxes_by_group`, a box per version."""
        boxes = self._sweep.kept
        result: dict[str, dict[str, list[tuple[str, Box]]]] = {}
        for e, kept in sorted(self._kept_groups.items(), key=lambda i: self._endpoint_key(i[0])):
            per_group = result[self._endpoint_names[e]] = {}
            for g, _ in kept:
                per_group[self._group_name(g)] = [
                    (self._version_names[v], boxes[(e, g, v)].box)
                    for v in self._version_order
                    if (e, g, v) in boxes
                ]
        return result

    def outlier_counts(self) -> dict[str, int]:
        """Requests flagged as outliers, per requested endpoint."""
        counts: dict[str, int] = defaultdict(int)
        for (e, _), totals in self._totals.items():
            counts[self._endpoint_names[e]] += totals.outliers
        return dict(sorted(counts.items()))

    # -- names and order ---------------------------------------------------------------------

    @cached_property
    def _endpoint_names(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, name FROM endpoints").fetchall())

    @cached_property
    def _versions(self) -> list[tuple[int, str, str, float, float]]:
        return self._conn.execute(
            "SELECT id, name, source, first_seen, last_seen FROM versions ORDER BY first_seen, id"
        ).fetchall()

    @cached_property
    def _version_names(self) -> dict[int, str]:
        return {row[0]: row[1] for row in self._versions}

    @cached_property
    def _test_runs(self) -> frozenset[int]:
        """The ids of the versions recorded by test runs."""
        return frozenset(row[0] for row in self._versions if row[2] == TEST_SOURCE)

    @cached_property
    def _version_order(self) -> dict[int, int]:
        """Version id -> its place in deployment order."""
        return {row[0]: place for place, row in enumerate(self._versions)}

    @cached_property
    def _group_names(self) -> dict[int, str]:
        names = dict(self._conn.execute("SELECT id, name FROM user_groups").fetchall())
        return {**names, NO_GROUP: UNKNOWN_GROUP}

    def _group_name(self, group_key: int) -> str:
        return self._group_names[group_key]

    def _endpoint_key(self, endpoint_id: int) -> tuple[str, int]:
        return self._endpoint_names[endpoint_id], endpoint_id

    def _sorted(
        self, boxes: dict[Key, Ranked], version_at: int | None = None
    ) -> list[tuple[Key, Ranked]]:
        def order(item: tuple[Key, Ranked]) -> tuple[Any, ...]:
            key = item[0]
            place = () if version_at is None else (self._version_order[key[version_at]],)
            return (*self._endpoint_key(key[0]), *place)

        return sorted(boxes.items(), key=order)

    def _pair_order(self, item: tuple[tuple[int, int], Change]) -> tuple[Any, ...]:
        endpoint_id, version_id = item[0]
        return (*self._endpoint_key(endpoint_id), self._version_order[version_id])

    # -- counts ------------------------------------------------------------------------------

    @cached_property
    def _activity(self) -> list[tuple[int, int, int, _Totals]]:
        """(endpoint, version, hour, counts): one GROUP BY serves hits, outliers, recent hits
        and the hourly chart."""
        now, conn = self.now, self._conn
        endpoint, version = conn.unindexed("endpoint_id"), conn.unindexed("version_id")
        rows = conn.execute(
            "SELECT endpoint_id, version_id, hour, COUNT(*), SUM(outlier), SUM(day), SUM(week)"
            f" FROM (SELECT endpoint_id, version_id, {conn.hour_start('started_at')} AS hour,"
            " CASE WHEN is_outlier <> 0 THEN 1 ELSE 0 END AS outlier,"
            " CASE WHEN started_at >= ? AND started_at <= ? THEN 1 ELSE 0 END AS day,"
            " CASE WHEN started_at >= ? AND started_at <= ? THEN 1 ELSE 0 END AS week"
            f" FROM requests) a GROUP BY {endpoint}, {version}, hour",
            (now - _DAY, now, now - _WEEK, now),
        ).fetchall()
        return [(e, v, int(hour), _Totals(*counts)) for e, v, hour, *counts in rows]

    @cached_property
    def _totals(self) -> dict[tuple[int, int], _Totals]:
        """Hits, outliers and recent hits per (endpoint, version)."""
        totals: dict[tuple[int, int], _Totals] = defaultdict(_Totals)
        for e, v, _, counts in self._activity:
            totals[(e, v)] += counts
        return dict(totals)

    # -- boxes and rank sums -----------------------------------------------------------------

    @cached_property
    def _sweep(self) -> _Sweep:
        """All boxes and version comparisons in one go, from one streamed read of the
        durations (:class:`~.sweep.Durations`): the first method that needs one pays for all,
        which is what a report does anyway."""
        durations = Durations.load(self._conn)
        parts = durations.parts
        by_version = durations.merged(((e, v), (e, v, g)) for e, v, g in parts)
        versions = {key: rank(values, median_ci=True) for key, values in by_version.items()}
        pairs = [
            (e, old, new)
            for e, old, new in self._pairs_in(versions)
            if min(versions[(e, old)].box.count, versions[(e, new)].box.count)
            >= MIN_CHANGE_REQUESTS
        ]
        sums = {
            (e, old, new): rank_sum(by_version[(e, old)], by_version[(e, new)])
            for e, old, new in pairs
        }
        del by_version
        endpoints = {
            key: rank(values)
            for key, values in durations.merged(((e,), (e, v, g)) for e, v, g in parts).items()
        }
        per_endpoint: dict[int, list[tuple[int, Box]]] = defaultdict(list)
        for (e, g), values in durations.merged(((e, g), (e, v, g)) for e, v, g in parts).items():
            per_endpoint[e].append((g, rank(values).box))
        groups = {
            e: sorted(found, key=lambda i: (-i[1].median, self._group_name(i[0])))
            for e, found in per_endpoint.items()
        }
        kept_keys = {(e, g) for e, found in groups.items() for g, _ in found[: self.max_groups]}
        kept: dict[Key, Ranked] = {
            (e, g, v): rank(values) for (e, v, g), values in parts.items() if (e, g) in kept_keys
        }
        others = durations.merged(((e,), (e, v, g)) for e, v, g in parts if (e, g) not in kept_keys)
        return _Sweep(
            endpoints=endpoints,
            versions=versions,
            groups=groups,
            kept=kept,
            others={key[0]: rank(values) for key, values in others.items()},
            rank_sums=sums,
        )

    @property
    def _kept_groups(self) -> dict[int, list[tuple[int, Box]]]:
        """Per endpoint id, the groups with a box of their own, slowest first."""
        return {e: found[: self.max_groups] for e, found in self._sweep.groups.items()}

    # -- version comparisons -----------------------------------------------------------------

    def _pairs_in(self, versions: dict[Key, Ranked]) -> list[tuple[int, int, int]]:
        """(endpoint, previous version, version): consecutive versions each endpoint ran in,
        of the same kind. A test run (``pytest --flamewatch``) follows the test run before
        it, a deployment the deployment before it: a suite on a CI machine and production on
        its servers do not time alike (``flamewatch check --against`` compares across)."""
        ran_in: dict[tuple[int, bool], list[int]] = defaultdict(list)
        test_runs = self._test_runs
        for e, v in sorted(versions, key=lambda k: self._version_order[k[1]]):
            ran_in[(e, v in test_runs)].append(v)
        return [(e, old, new) for (e, _), found in ran_in.items() for old, new in pairwise(found)]

    @cached_property
    def _changes(self) -> dict[tuple[int, int], Change]:
        """(endpoint, version) -> its change against the previous version, where both sides
        have enough requests."""
        return {
            (e, new): self._change(e, old, new, sums)
            for (e, old, new), sums in self._sweep.rank_sums.items()
        }

    def _change(self, e: int, old: int, new: int, sums: tuple[float, int]) -> Change:
        versions, names = self._sweep.versions, self._version_names
        return self.version_change(
            self._endpoint_names[e],
            names[old],
            names[new],
            versions[(e, old)],
            versions[(e, new)],
            sums,
        )

    def version_change(
        self,
        endpoint: str,
        previous: str,
        version: str,
        before: Ranked,
        after: Ranked,
        sums: tuple[float, int],
    ) -> Change:
        """How durations changed from ``before`` (in ``previous``) to ``after`` (in ``version``),
        both ranked with their median's interval; ``sums`` is their :func:`.sweep.rank_sum`."""
        (old_low, old_high), (new_low, new_high) = _median_ci(before), _median_ci(after)
        low, high = ratio(new_low, old_high), ratio(new_high, old_low)
        change = ratio(after.box.median, before.box.median)
        p_value = mann_whitney_p(after.box.count, before.box.count, *sums)
        return Change(
            endpoint=endpoint,
            version=version,
            previous=previous,
            ratio=change,
            ratio_low=low,
            ratio_high=high,
            p_value=p_value,
            count=after.box.count,
            previous_count=before.box.count,
            verdict=verdict(change, low, high, p_value, self.change_threshold, self.alpha),
        )

    @cached_property
    def _latest_changes(self) -> dict[int, Change]:
        """Per endpoint id, the change of its latest version, if that one has a change."""
        latest: dict[int, int] = {}
        order, test_runs = self._version_order, self._test_runs
        # the latest deployment's change wins over any test run's
        for e, _, new in sorted(
            self._pairs_in(self._sweep.versions), key=lambda p: (p[2] not in test_runs, order[p[2]])
        ):
            latest[e] = new
        changes = self._changes
        return {e: changes[(e, v)] for e, v in latest.items() if (e, v) in changes}


def _median_ci(ranked: Ranked) -> tuple[float, float]:
    low, high = median_ci_ranks(ranked.box.count)
    return ranked.at[low], ranked.at[high]
