"""What the report's pages show, read from the store lazily: :class:`Reading`.

Each part (the endpoint table, the versions, the boxes, the findings, an endpoint's page...) is
read on first use and kept, so a live dashboard page costs what that page shows, and a static
build reads each part once. The parts read through :class:`~.aggregate.ReportData` and
:func:`~.distributions.read_distributions`, which read the store's histograms (schemas 4 and 5)
each from the coarsest table that answers; :mod:`.site` renders them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from flamewatch.sampler.store.connection import StoreConnection

from .aggregate import ReportData
from .change_tests import median
from .distributions import Distributions, read_distributions
from .findings import Finding, derive_findings
from .flames import FlameReport, Function, Profile
from .hits import HitsOverTime, hits_over_time, hits_per_local_day
from .hosts import ProcessRow, process_rows
from .model import Box, Change, EndpointRow, HourlyHits, VersionRow
from .outliers import OutlierRow, list_outliers
from .summary import open_readonly

__all__ = ["EndpointView", "Flames", "Reading"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class EndpointView:
    """What an endpoint's page shows."""

    endpoint: EndpointRow
    by_version: list[tuple[str, Box]]
    by_group: list[tuple[str, Box]]
    by_group_version: dict[str, list[tuple[str, Box]]]
    #: requests per local day of the site's time zone (:attr:`.hits.HitsOverTime.per_local_day`)
    per_day: list[HourlyHits]
    changes: list[Change]
    outliers: list[OutlierRow]
    findings: list[tuple[Finding, str]]
    profiles: list[tuple[str, Profile, float]]
    functions: dict[int, Function]
    #: (version, [(hour start, median ms, requests)]), deployment order
    medians: list[tuple[str, list[tuple[float, float, int]]]]


class Reading:
    """Everything the pages show, each part read from the store on first use and kept.

    A part opens a read-only connection for its reading (none is held between pages: an open
    read would hold back SQLite's checkpoints and PostgreSQL's vacuum), unless :meth:`held`
    keeps one open for a whole build. One :class:`ReportData` keeps what the parts share (the
    totals, the version histograms). With ``per_endpoint`` (the live dashboard), an endpoint's
    page reads that endpoint's rows only; without it (the static site, which shows every page),
    the endpoint pages take their part of the whole reading."""

    def __init__(
        self,
        database: str,
        *,
        now: float,
        change_threshold: float,
        max_groups: int,
        per_endpoint: bool,
        tz: ZoneInfo,
    ) -> None:
        self.database = database
        self.tz = tz
        self._settings: dict[str, Any] = {
            "now": now,
            "change_threshold": change_threshold,
            "max_groups": max_groups,
        }
        self.per_endpoint = per_endpoint
        self._lock = threading.RLock()
        self._conn: StoreConnection | None = None
        self._data: ReportData | None = None
        self._found: dict[str, Any] = {}

    @property
    def alpha(self) -> float:
        """The significance level of the version comparisons."""
        return self._part("alpha", lambda _, data: data.alpha)

    @contextmanager
    def held(self) -> Iterator[None]:
        """One connection for every part read in the block."""
        with self._open():
            yield

    @contextmanager
    def _open(self) -> Iterator[tuple[StoreConnection, ReportData]]:
        with self._lock:
            if self._conn is not None and self._data is not None:
                yield self._conn, self._data
                return
            with open_readonly(self.database) as conn:
                if self._data is None:
                    self._data = ReportData(conn, **self._settings)
                self._conn = conn
                try:
                    with self._data.reading_from(conn):
                        yield conn, self._data
                finally:
                    self._conn = None

    def _part(self, key: str, read: Callable[[StoreConnection, ReportData], _T]) -> _T:
        with self._lock:
            if key not in self._found:
                with self._open() as (conn, data):
                    self._found[key] = read(conn, data)
            found: _T = self._found[key]
            return found

    def check(self) -> tuple[str, int, int]:
        """The store's label, its requests and outliers; :class:`StoreError` unless it is a
        store the report reads (one sum over ``traffic``: 58 ms at 10^7 requests)."""
        return self._part("counts", lambda conn, data: (conn.label, *data.request_counts()))

    @property
    def endpoint_names(self) -> list[str]:
        return self._part(
            "names", lambda conn, _: [n for (n,) in conn.execute("SELECT name FROM endpoints")]
        )

    @property
    def endpoints(self) -> list[EndpointRow]:
        return self._part("endpoints", lambda _, data: data.endpoints())

    @property
    def versions(self) -> list[VersionRow]:
        return self._part("versions", lambda _, data: data.versions())

    @property
    def version_names(self) -> list[str]:
        return self._part("version names", lambda _, data: data.version_names())

    @property
    def changes(self) -> list[Change]:
        return self._part("changes", lambda _, data: data.changes())

    @property
    def hits_over_time(self) -> HitsOverTime:
        """Requests per endpoint per local day of the site's time zone, and per UTC hour
        (:mod:`.hits`)."""
        return self._part("hits over time", lambda conn, _: hits_over_time(conn, self.tz))

    @property
    def by_endpoint(self) -> dict[str, Box]:
        return self._part("by endpoint", lambda _, data: data.box_by_endpoint())

    @property
    def processes(self) -> list[ProcessRow]:
        return self._part("processes", lambda conn, _: process_rows(conn))

    @property
    def outliers(self) -> list[OutlierRow]:
        return self._part("outliers", lambda conn, _: list_outliers(conn))

    @property
    def flames(self) -> Flames:
        """The findings and profiles of every endpoint (the versions page, the static site)."""
        return self._part(
            "flames",
            # the boxes per version only (their means): not the groups' boxes nor the hits,
            # which the versions page does not show
            lambda conn, data: _flames_of(conn, data, self.endpoints, data.boxes_by_version()),
        )

    def endpoint_view(self, name: str) -> EndpointView:
        """What endpoint ``name``'s page shows: read for it alone when ``per_endpoint``."""
        if not self.per_endpoint:
            return self._part(f"endpoint {name}", lambda *_: self._view_of(name))

        def read(conn: StoreConnection, _: ReportData) -> EndpointView:
            data = ReportData(conn, **self._settings, endpoint=name)
            boxes = _boxes_of(data, hits_per_local_day(conn, self.tz, endpoint=name))
            rows = data.endpoints()
            flames = _flames_of(conn, data, rows, boxes.by_version)
            outliers = list_outliers(conn, endpoint=name)
            return _view(name, rows, boxes, flames, outliers)

        return self._part(f"endpoint {name}", read)

    @property
    def _boxes(self) -> _Boxes:
        return self._part(
            "boxes", lambda _, data: _boxes_of(data, self.hits_over_time.per_local_day)
        )

    def _view_of(self, name: str) -> EndpointView:
        """An endpoint's page from the whole reading (which the static site reads anyway)."""
        outliers = [o for o in self.outliers if o.endpoint == name]
        return _view(name, self.endpoints, self._boxes, self.flames, outliers)


@dataclass(frozen=True)
class _Boxes:
    """The boxes and series of the endpoint pages, per endpoint name (computed once)."""

    by_version: dict[str, list[tuple[str, Box]]]
    by_group: dict[str, list[tuple[str, Box]]]
    by_group_version: dict[str, dict[str, list[tuple[str, Box]]]]
    per_day: dict[str, list[HourlyHits]]
    changes: dict[str, list[Change]]


def _boxes_of(data: ReportData, hits_per_day: list[HourlyHits]) -> _Boxes:
    per_day: dict[str, list[HourlyHits]] = {}
    for h in hits_per_day:
        per_day.setdefault(h.endpoint, []).append(h)
    changes: dict[str, list[Change]] = {}
    for c in data.changes():
        changes.setdefault(c.endpoint, []).append(c)
    return _Boxes(
        by_version=data.boxes_by_version(),
        by_group=data.boxes_by_group(),
        by_group_version=data.boxes_by_group_version(),
        per_day=per_day,
        changes=changes,
    )


def _view(
    name: str,
    endpoints: list[EndpointRow],
    boxes: _Boxes,
    flames: Flames,
    outliers: list[OutlierRow],
) -> EndpointView:
    return EndpointView(
        endpoint=next(e for e in endpoints if e.name == name),
        by_version=boxes.by_version.get(name, []),
        by_group=boxes.by_group.get(name, []),
        by_group_version=boxes.by_group_version.get(name, {}),
        per_day=boxes.per_day.get(name, []),
        changes=boxes.changes.get(name, []),
        outliers=outliers,
        findings=[(f, f"diff-{i}") for i, f in enumerate(flames.findings, 1) if f.endpoint == name],
        profiles=flames.profiles.get(name, []),
        functions=flames.functions,
        medians=flames.medians.get(name, []),
    )


def _flames_of(
    conn: StoreConnection,
    data: ReportData,
    endpoints: list[EndpointRow],
    by_version: dict[str, list[tuple[str, Box]]],
) -> Flames:
    return _read_flames(
        FlameReport(conn, data),
        endpoints,
        by_version,
        read_distributions(conn, data.endpoint, data.group_cells, data.version_latencies),
        data.change_threshold,
        data.alpha,
    )


@dataclass(frozen=True)
class Flames:
    """What the site shows of the aggregated profiles, read while the store is open."""

    functions: dict[int, Function]
    findings: list[Finding]
    profiles: dict[str, list[tuple[str, Profile, float]]]  # endpoint -> (version, profile, mean)
    #: endpoint -> (version, [(hour start, median ms, requests)]), deployment order
    medians: dict[str, list[tuple[str, list[tuple[float, float, int]]]]]


def _read_flames(
    report: FlameReport,
    endpoints: list[EndpointRow],
    by_version: dict[str, list[tuple[str, Any]]],
    distributions: Distributions,
    change_threshold: float,
    alpha: float,
) -> Flames:
    profiles: dict[str, list[tuple[str, Profile, float]]] = {}
    for endpoint in endpoints:
        means = dict(by_version.get(endpoint.name, []))
        found = []
        for version in report.profiled_versions(endpoint.name):
            profile = report.profile(endpoint.name, version)
            if profile is not None and profile.total_ms > 0 and version in means:
                found.append((version, profile, means[version].mean))
        profiles[endpoint.name] = found
    findings = derive_findings(distributions, report, threshold=change_threshold, alpha=alpha)
    medians: dict[str, list[tuple[str, list[tuple[float, float, int]]]]] = {}
    for version in distributions.versions:
        for name in distributions.endpoints():
            series = distributions.buckets.get((name, version))
            if series:
                points = [(start, median(h), h.total) for start, h in series]
                medians.setdefault(name, []).append((version, points))
    return Flames(report.functions, findings, profiles, medians)
