"""Everything the report shows: :class:`ReportData`.

A store holds millions of requests; a report page needs a few numbers per endpoint, version
and group. The writer keeps those numbers ready, in the same transaction as the requests' rows
(schemas 4 and 5), in tables whose size grows with endpoints x versions x groups x time
buckets, never with the number of requests, and every number here is read from the coarsest
table that holds it:

- ``traffic_daily`` -- requests per endpoint, version and UTC day, with their outliers and the
  exact sum of their durations: hits, outliers, means; ``hits_hourly`` -- requests per
  endpoint and UTC hour: hits in the last day and week, and per hour.
- ``latency_version`` -- a histogram of durations per endpoint and version (1 % buckets, see
  :mod:`flamewatch.sampler.histogram`): every box of endpoints and versions and every version
  comparison, read from the buckets as :mod:`.binned` explains (each quantile within 1 % of
  the exact one); ``latency`` per group too, read only for the groups shown (:mod:`.latency`).

Raw ``requests`` rows are never read here; only lists of single requests (outliers) read them.
This module names the numbers, orders them (versions in deployment order, groups slowest
first) and turns them into version comparisons. Group 0 is the requests without a group
(``"unknown"``); group -1 holds the groups the writer did not keep apart, beyond its cap per
endpoint and version (``"others"``), which the report adds to its own ``"others"``.

The SQL is standard, run through :class:`~flamewatch.sampler.store.connection.StoreConnection`
on SQLite and PostgreSQL alike. Results are computed once per :class:`ReportData`, on first
use, and cached.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.base import StoreError
from flamewatch.sampler.store.connection import StoreConnection
from flamewatch.sampler.version import TEST_SOURCE

from .binned import box_of
from .change_tests import compare
from .latency import (
    CAPPED_GROUPS,
    NO_GROUP,
    GroupCells,
    GroupLatencies,
    VersionLatencies,
    read_group_latencies,
    read_version_latencies,
)
from .model import Box, Change, EndpointRow, HourlyHits, VersionRow

__all__ = [
    "CAPPED_GROUPS",
    "MIN_CHANGE_REQUESTS",
    "NO_GROUP",
    "OTHER_GROUPS",
    "UNKNOWN_GROUP",
    "ReportData",
]

#: the fewest requests on each side of a version comparison
MIN_CHANGE_REQUESTS = 10
#: the group of requests stored without one, and the box of the groups beyond ``max_groups``
UNKNOWN_GROUP, OTHER_GROUPS = "unknown", "others"
#: the schema that has the tables read here
HISTOGRAM_SCHEMA = 5

_DAY, _WEEK = 86_400.0, 7 * 86_400.0

Key = tuple[int, ...]


@dataclass(frozen=True)
class _Totals:
    hits: int = 0
    outliers: int = 0
    last_day: int = 0
    last_week: int = 0
    sum_ms: float = 0.0

    def __add__(self, other: _Totals) -> _Totals:
        return _Totals(
            self.hits + other.hits,
            self.outliers + other.outliers,
            self.last_day + other.last_day,
            self.last_week + other.last_week,
            self.sum_ms + other.sum_ms,
        )


class ReportData:
    """The numbers of a report, read from a store's connection (read-only is enough): a
    :class:`StoreConnection` (SQLite or PostgreSQL) or a plain ``sqlite3.Connection``.

    ``now`` anchors "last day/week" (default: the time of construction): the requests of the
    UTC hours that began in the 24 hours (7 days) up to ``now``. A version comparison
    (:class:`Change`) needs :data:`MIN_CHANGE_REQUESTS` requests on each side; its verdict uses
    ``change_threshold`` (the smallest relevant change of the median, 0.2 = 20 %) and ``alpha``
    (the significance level). Per endpoint, the ``max_groups`` groups with the most requests
    get their own box (shown slowest first); the rest share one, ``"others"``, with the groups
    beyond the writer's cap. These
    settings stay readable as attributes.

    With ``endpoint`` (a name), everything is read for that endpoint only, by the tables' keys
    (which start with the endpoint): what one endpoint's page shows costs what that endpoint
    stored, not what the store holds. Each number is read on first use, so a page that shows
    the endpoint table never reads the groups' histograms.

    An endpoint's ``change`` is the change of the latest version it ran in against the one
    before; ``None`` when either has fewer than :data:`MIN_CHANGE_REQUESTS` requests (an older
    change is not shown instead). Requests without a group are the group ``"unknown"``.

    Raises :class:`~flamewatch.sampler.store.StoreError` on first use when the store's schema
    predates the histograms (``flamewatch migrate`` upgrades it).
    """

    def __init__(
        self,
        conn: Any,
        *,
        now: float | None = None,
        change_threshold: float = 0.2,
        max_groups: int = 15,
        alpha: float = 0.01,
        endpoint: str | None = None,
    ) -> None:
        self._conn = StoreConnection.wrap(conn)  # a sqlite3 connection is taken as it is
        self.now = time.time() if now is None else now
        self.change_threshold = change_threshold
        self.max_groups = max_groups
        self.alpha = alpha
        self.endpoint = endpoint
        #: the groups' cells read so far: the boxes per group and the findings share them
        self.group_cells = GroupCells()

    @contextmanager
    def reading_from(self, conn: Any) -> Iterator[ReportData]:
        """Read what is not read yet through ``conn`` while in the block: a live site opens a
        connection for each page it renders, and keeps what earlier pages read."""
        before, self._conn = self._conn, StoreConnection.wrap(conn)
        try:
            yield self
        finally:
            self._conn = before

    # -- the contract ------------------------------------------------------------------------

    def endpoints(self) -> list[EndpointRow]:
        """Every endpoint in the store, requested or not, by name."""
        totals = self._endpoint_totals
        rules: dict[int, list[str]] = defaultdict(list)
        methods: dict[int, set[str]] = defaultdict(set)
        where, args = self._only("endpoint_id")
        for endpoint_id, rule, joined in self._conn.execute(
            "SELECT endpoint_id, rule, methods FROM rules" + where + " ORDER BY rule", args
        ):
            rules[endpoint_id].append(rule)
            methods[endpoint_id].update(m for m in joined.split(",") if m)
        latest = self._latest_changes
        boxes = self._endpoint_boxes
        rows = []
        where, args = self._only("id")
        for endpoint_id, name, monitored, last_accessed in self._conn.execute(
            "SELECT id, name, monitored, last_accessed FROM endpoints" + where + " ORDER BY name",
            args,
        ).fetchall():
            counts = totals.get(endpoint_id, _Totals())
            rows.append(
                EndpointRow(
                    name=name,
                    rules=rules[endpoint_id],
                    methods=sorted(methods[endpoint_id]),
                    monitored=bool(monitored),
                    hits=counts.hits,
                    hits_last_day=counts.last_day,
                    hits_last_week=counts.last_week,
                    box=boxes.get(endpoint_id),
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

    def version_names(self) -> list[str]:
        """Every version's name in deployment order (no counts: one small table read)."""
        return [row[1] for row in self._versions]

    def request_counts(self) -> tuple[int, int]:
        """Requests and outliers in the store (of the endpoint read): one sum, no grouping."""
        self._require_histograms()
        where, args = self._only("endpoint_id")
        hits, outliers = self._conn.execute(
            "SELECT CAST(coalesce(SUM(hits), 0) AS BIGINT),"
            " CAST(coalesce(SUM(outliers), 0) AS BIGINT) FROM traffic_daily" + where,
            args,
        ).fetchone()
        return int(hits), int(outliers)

    def changes(self) -> list[Change]:
        """Each endpoint's consecutive versions compared, by endpoint name, then deployment."""
        return [change for _, change in sorted(self._changes.items(), key=self._pair_order)]

    def hourly_hits(self) -> list[HourlyHits]:
        """Requests per endpoint per UTC hour, by endpoint name, then hour: ``hits_hourly`` as
        it is stored (endpoints x hours rows; the charts bucket them by local day and hour)."""
        self._require_histograms()
        names = self._endpoint_names
        where, args = self._only("endpoint_id")
        by_endpoint: dict[int, list[HourlyHits]] = defaultdict(list)
        for e, hour, count in self._conn.execute(
            "SELECT endpoint_id, hour, hits FROM hits_hourly"
            + where
            + " ORDER BY endpoint_id, hour",
            args,
        ):
            if count:
                by_endpoint[e].append(HourlyHits(names[e], int(hour), int(count)))
        return [h for e in sorted(by_endpoint, key=self._endpoint_key) for h in by_endpoint[e]]

    def box_by_endpoint(self) -> dict[str, Box]:
        """The box of each requested endpoint's durations."""
        names = self._endpoint_names
        return {names[e]: box for (e,), box in self._sorted(self._endpoint_boxes_by_key)}

    def boxes_by_version(self) -> dict[str, list[tuple[str, Box]]]:
        """Per endpoint, a box per version it ran in, in deployment order."""
        result: dict[str, list[tuple[str, Box]]] = {}
        for (e, v), box in self._sorted(self._version_boxes, version_at=1):
            result.setdefault(self._endpoint_names[e], []).append((self._version_names[v], box))
        return result

    def boxes_by_group(self) -> dict[str, list[tuple[str, Box]]]:
        """Per endpoint, the ``max_groups`` groups with the most requests, slowest (median)
        first, with their boxes, then ``("others", box)`` of all the remaining groups'
        requests (with the groups beyond the writer's cap), if any remain."""
        result = {
            self._endpoint_names[e]: [(self._group_name(g), box) for g, box in kept]
            for e, kept in sorted(self._kept_groups.items(), key=lambda i: self._endpoint_key(i[0]))
        }
        for e, histogram in sorted(self._group_latency.others.items()):
            result.setdefault(self._endpoint_names[e], []).append((OTHER_GROUPS, box_of(histogram)))
        return result

    def boxes_by_group_version(self) -> dict[str, dict[str, list[tuple[str, Box]]]]:
        """Per endpoint, per group kept by :meth:`boxes_by_group`, a box per version."""
        return {
            endpoint: {
                group: [(version, box_of(h)) for version, h in found]
                for group, found in per_group.items()
            }
            for endpoint, per_group in self.histograms_by_group_version().items()
        }

    def histograms_by_group_version(self) -> dict[str, dict[str, list[tuple[str, Histogram]]]]:
        """The histograms behind :meth:`boxes_by_group_version`, for comparisons per group."""
        cells = self._group_latency.kept
        result: dict[str, dict[str, list[tuple[str, Histogram]]]] = {}
        for e, kept in sorted(self._kept_groups.items(), key=lambda i: self._endpoint_key(i[0])):
            per_group = result[self._endpoint_names[e]] = {}
            for g, _ in kept:
                per_group[self._group_name(g)] = [
                    (self._version_names[v], cells[(e, g, v)])
                    for v in self._version_order
                    if (e, g, v) in cells
                ]
        return result

    def outlier_counts(self) -> dict[str, int]:
        """Requests flagged as outliers, per requested endpoint."""
        names = self._endpoint_names
        return {
            names[e]: totals.outliers
            for e, totals in sorted(self._endpoint_totals.items(), key=lambda i: names[i[0]])
            if totals.hits
        }

    # -- names and order ---------------------------------------------------------------------

    @cached_property
    def _endpoint_names(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, name FROM endpoints").fetchall())

    @cached_property
    def _endpoint_id(self) -> int | None:
        """The id of the one endpoint read (``None``: all of them; 0 when it is unknown)."""
        if self.endpoint is None:
            return None
        ids = {name: endpoint_id for endpoint_id, name in self._endpoint_names.items()}
        return ids.get(self.endpoint, 0)  # ids start at 1: an unknown endpoint has no rows

    def _only(self, column: str) -> tuple[str, tuple[int, ...]]:
        """The ``WHERE`` that keeps the one endpoint read, by ``column`` (none for all)."""
        endpoint_id = self._endpoint_id
        return ("", ()) if endpoint_id is None else (f" WHERE {column} = ?", (endpoint_id,))

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
        return {**names, NO_GROUP: UNKNOWN_GROUP, CAPPED_GROUPS: OTHER_GROUPS}

    def _group_name(self, group_key: int) -> str:
        return self._group_names[group_key]

    def _endpoint_key(self, endpoint_id: int) -> tuple[str, int]:
        return self._endpoint_names[endpoint_id], endpoint_id

    def _sorted(
        self, boxes: dict[Key, Box], version_at: int | None = None
    ) -> list[tuple[Key, Box]]:
        def order(item: tuple[Key, Box]) -> tuple[Any, ...]:
            key = item[0]
            place = () if version_at is None else (self._version_order[key[version_at]],)
            return (*self._endpoint_key(key[0]), *place)

        return sorted(boxes.items(), key=order)

    def _pair_order(self, item: tuple[tuple[int, int], Change]) -> tuple[Any, ...]:
        endpoint_id, version_id = item[0]
        return (*self._endpoint_key(endpoint_id), self._version_order[version_id])

    # -- counts ------------------------------------------------------------------------------

    def _require_histograms(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or int(row[0]) < HISTOGRAM_SCHEMA:
            raise StoreError(
                f"{self._conn.label or 'the store'} has schema version"
                f" {'none' if row is None else row[0]}, older than its reports read"
                f" ({HISTOGRAM_SCHEMA}); run `flamewatch migrate --database ...` on it first"
            )

    @cached_property
    def _totals(self) -> dict[tuple[int, int], _Totals]:
        """Hits, outliers and sums per (endpoint, version), from ``traffic_daily`` summed in
        SQL (a row per endpoint, version and day: 3,837 rows at 10^7 requests, 241 sums; no
        recent hits: see :attr:`_endpoint_totals`)."""
        self._require_histograms()
        where, args = self._only("endpoint_id")
        return {
            (e, v): _Totals(int(hits), int(outliers), sum_ms=float(ms))
            for e, v, hits, outliers, ms in self._conn.execute(
                "SELECT endpoint_id, version_id, CAST(SUM(hits) AS BIGINT),"
                " CAST(SUM(outliers) AS BIGINT), SUM(sum_ms) FROM traffic_daily"
                + where
                + " GROUP BY endpoint_id, version_id",
                args,
            )
        }

    @cached_property
    def _endpoint_totals(self) -> dict[int, _Totals]:
        """Per endpoint, the sums of :attr:`_totals` and its hits of the UTC hours that began
        in the last day and week, summed in SQL from the week's ``hits_hourly`` rows (by its
        hour index)."""
        totals: dict[int, _Totals] = defaultdict(_Totals)
        for (e, _), counts in self._totals.items():
            totals[e] += counts
        day, week, now = self.now - _DAY, self.now - _WEEK, self.now
        where, args = self._only("endpoint_id")
        for e, last_day, last_week in self._conn.execute(
            "SELECT endpoint_id, CAST(SUM(CASE WHEN hour >= ? THEN hits ELSE 0 END) AS BIGINT),"
            " CAST(SUM(hits) AS BIGINT) FROM hits_hourly WHERE hour >= ? AND hour <= ?"
            + where.replace(" WHERE ", " AND ")
            + " GROUP BY endpoint_id",
            (day, week, now, *args),
        ):
            totals[e] += _Totals(last_day=int(last_day), last_week=int(last_week))
        return dict(totals)

    # -- histograms and boxes ----------------------------------------------------------------

    @cached_property
    def _version_latency(self) -> VersionLatencies:
        self._require_histograms()
        return read_version_latencies(self._conn, self._endpoint_id)

    @property
    def version_latencies(self) -> VersionLatencies:
        """``latency_version`` as read for the tables and boxes (of :attr:`endpoint`, or all):
        the findings' :func:`~.distributions.read_distributions` takes it rather than read
        the table again (~0.1 s at 10^7 requests)."""
        return self._version_latency

    @cached_property
    def _group_latency(self) -> GroupLatencies:
        self._require_histograms()
        return read_group_latencies(
            self._conn,
            self.max_groups,
            self._group_name,
            self._version_latency,
            self._endpoint_id,
            self.group_cells,
        )

    @property
    def _kept_groups(self) -> dict[int, list[tuple[int, Box]]]:
        """Per endpoint id, the groups with a box of their own, slowest first."""
        return self._group_latency.groups

    @cached_property
    def _version_boxes(self) -> dict[Key, Box]:
        totals = self._totals
        return {
            key: _box(histogram, totals.get(key))
            for key, histogram in self._version_latency.versions.items()
        }

    @cached_property
    def _endpoint_boxes(self) -> dict[int, Box]:
        totals = self._endpoint_totals
        return {e: _box(h, totals.get(e)) for e, h in self._version_latency.endpoints.items()}

    @property
    def _endpoint_boxes_by_key(self) -> dict[Key, Box]:
        return {(e,): box for e, box in self._endpoint_boxes.items()}

    # -- version comparisons -----------------------------------------------------------------

    def _pairs_in(self, versions: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
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
        changes = {}
        for e, old, new in self._pairs_in(self._version_latency.versions):
            change = self._change_of(e, old, new)
            if change is not None:
                changes[(e, new)] = change
        return changes

    def _change_of(self, e: int, old: int, new: int) -> Change | None:
        """The change of endpoint ``e`` from version ``old`` to ``new``, if both sides have
        enough requests."""
        versions, names = self._version_latency.versions, self._version_names
        before, after = versions[(e, old)], versions[(e, new)]
        if min(before.total, after.total) < MIN_CHANGE_REQUESTS:
            return None
        return self.version_change(self._endpoint_names[e], names[old], names[new], before, after)

    def version_change(
        self, endpoint: str, previous: str, version: str, before: Histogram, after: Histogram
    ) -> Change:
        """How durations changed from ``before`` (in ``previous``) to ``after`` (in
        ``version``): the ratio of the medians with its 95 % interval (from the medians'
        intervals), the rank test's p-value, and the verdict, all read from the histograms."""
        return compare(
            endpoint,
            previous,
            version,
            before,
            after,
            threshold=self.change_threshold,
            alpha=self.alpha,
        )

    @cached_property
    def _latest_changes(self) -> dict[int, Change]:
        """Per endpoint id, the change of its latest version, if that one has a change."""
        latest: dict[int, tuple[int, int]] = {}
        order, test_runs = self._version_order, self._test_runs
        # the latest deployment's change wins over any test run's
        for e, old, new in sorted(
            self._pairs_in(self._version_latency.versions),
            key=lambda p: (p[2] not in test_runs, order[p[2]]),
        ):
            latest[e] = (old, new)
        if "_changes" in self.__dict__:  # computed already (the versions page)
            changes = self._changes
            return {e: changes[(e, v)] for e, (_, v) in latest.items() if (e, v) in changes}
        found = {e: self._change_of(e, old, new) for e, (old, new) in latest.items()}
        return {e: change for e, change in found.items() if change is not None}


def _box(histogram: Histogram, totals: _Totals | None) -> Box:
    """The box of a histogram, its mean from the exact sum when ``traffic`` counted the same
    requests (the two tables are written together; pruned apart, they may differ)."""
    exact = totals is not None and totals.hits == histogram.total
    return box_of(histogram, totals.sum_ms if exact and totals is not None else None)
