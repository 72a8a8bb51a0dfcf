"""The store's latency histograms as Prometheus / OpenMetrics text, for scrapers.

What a scraper reads is ``latency_total``: per endpoint, method and status, the count and the
exact sum of durations of every DDSketch bucket (:mod:`flamewatch.sampler.histogram`), written
by every process and host that shares the store and never pruned. So the series are cumulative
counters over the whole deployment -- the multiprocess counting a per-process client library
cannot do -- and reading them costs one ``GROUP BY`` over that table's rows, whose number grows
with endpoints x methods x statuses x buckets, never with requests.

Names follow OpenTelemetry's HTTP semantic conventions: ``http.server.request.duration`` in
seconds becomes ``http_server_request_duration_seconds``, with the labels ``http_route``,
``http_request_method`` and ``http_response_status_code``. The ``le`` bounds are DDSketch
bucket bounds (``gamma^i`` ms) chosen next to the usual 5 ms ... 10 s, so each cumulative count
is exact: every duration counted under ``le`` is at most ``le``, every other one is above it.

Pure code over a :class:`StoreConnection` and numbers: no Flask, no clock but the one given.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flamewatch.sampler.histogram import GAMMA
from flamewatch.sampler.store.base import StoreError
from flamewatch.sampler.store.connection import (
    StoreConnection,
    driver_errors,
    open_connection,
)

__all__ = [
    "DURATION_METRIC",
    "LE_BOUNDS_S",
    "OPENMETRICS_CONTENT_TYPE",
    "PROMETHEUS_CONTENT_TYPE",
    "DurationSeries",
    "Metrics",
    "MetricsCache",
    "escape_label_value",
    "read_metrics",
    "read_store_metrics",
    "render",
    "wants_openmetrics",
]

DURATION_METRIC = "http_server_request_duration_seconds"
DROPPED_METRIC = "flamewatch_dropped_records"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: the bucket bounds OpenTelemetry advises for ``http.server.request.duration`` (seconds),
#: which are also Prometheus client libraries' defaults from 5 ms on
_ADVISED_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: the DDSketch bucket whose upper bound is nearest each advised bound (within 1 %)
LE_BUCKETS: tuple[int, ...] = tuple(round(math.log(s * 1000) / math.log(GAMMA)) for s in _ADVISED_S)
#: the ``le`` bounds: those buckets' upper bounds, in seconds
LE_BOUNDS_S: tuple[float, ...] = tuple(GAMMA**i / 1000 for i in LE_BUCKETS)

#: OpenTelemetry's known methods; any other is ``_OTHER`` (as its conventions ask, which also
#: bounds the label's values)
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)

_DURATION_HELP = (
    "Duration of HTTP server requests, summed over every process and host that writes"
    " flamewatch's store. Each le is a bound of flamewatch's DDSketch buckets"
    " (1 % relative width) next to the usual 5 ms to 10 s, so the count under it is exact."
)
_DROPPED_HELP = (
    "Request records flamewatch dropped instead of storing (queue full, store refused),"
    " summed over every process that registered in the store."
)


@dataclass(frozen=True)
class DurationSeries:
    """One label set of the duration histogram: counts per ``le`` slot (not cumulative; the
    last slot holds what is above the last bound) and the sum of durations."""

    route: str
    method: str
    status: int
    counts: tuple[int, ...]
    sum_s: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Metrics:
    """What a scrape shows, as read from the store."""

    durations: list[DurationSeries]
    dropped: int


def _slot_sql() -> str:
    """The ``le`` slot of a bucket, in SQL: 0 for the first bound, ... ``len(LE_BUCKETS)``
    above the last (the constants are this module's own integers, never input)."""
    cases = " ".join(f"WHEN bucket <= {b} THEN {k}" for k, b in enumerate(LE_BUCKETS))
    return f"CASE {cases} ELSE {len(LE_BUCKETS)} END"


_DURATIONS_SQL = (
    f"SELECT endpoint_id, method, status, {_slot_sql()},"
    " CAST(SUM(count) AS BIGINT), SUM(sum_ms)"
    " FROM latency_total GROUP BY 1, 2, 3, 4"
)


def read_store_metrics(database: str) -> Metrics:
    """The metrics of the store at a path or URL. A store not created yet (no file, or its
    schema not yet committed by the first writer), or of a schema before the histograms, has
    no series yet: that is what a scraper is told, rather than an error. A store that cannot be
    reached raises :class:`StoreError`."""
    path = database.removeprefix("sqlite:///")
    if path != database and not os.path.exists(path):
        return Metrics([], 0)
    conn = open_connection(database, readonly=False)  # readonly also checks for a schema
    try:
        if "latency_total" not in conn.tables():
            return Metrics([], 0)
        return read_metrics(conn)
    finally:
        conn.close()


def read_metrics(conn: StoreConnection) -> Metrics:
    """Every series from a store of schema 4 or later: three small queries whatever the
    number of requests. The histograms are read first, so that every endpoint they name is
    already there to be named, however the reads interleave with writers."""
    try:
        folded = conn.execute(_DURATIONS_SQL).fetchall()
        routes = _routes(conn)
        (dropped,) = conn.execute("SELECT COALESCE(SUM(dropped), 0) FROM processes").fetchone()
    except driver_errors() as exc:
        raise StoreError(f"cannot read the metrics of {conn.label!r}: {exc}") from None
    slots = len(LE_BUCKETS) + 1
    merged: dict[tuple[str, str, int], tuple[list[int], list[float]]] = {}
    for endpoint_id, method, status, slot, count, sum_ms in folded:
        # two endpoints may share a rule (by host or subdomain) and unknown methods share
        # _OTHER: equal label sets are one series, their histograms added
        key = (routes.get(endpoint_id, ""), _method(method), int(status))
        counts, total = merged.setdefault(key, ([0] * slots, [0.0]))
        counts[int(slot)] += int(count)
        total[0] += float(sum_ms)
    durations = [
        DurationSeries(route, method, status, tuple(counts), total[0] / 1000)
        for (route, method, status), (counts, total) in sorted(merged.items())
    ]
    return Metrics(durations, int(dropped))


def _routes(conn: StoreConnection) -> dict[int, str]:
    """``http_route`` per endpoint id: its URL rule; its rules joined by `` | `` (first seen
    first) when it has several; its name when it has none."""
    rules: dict[int, list[str]] = {}
    for endpoint_id, rule in conn.execute(
        "SELECT endpoint_id, rule FROM rules ORDER BY endpoint_id, first_seen, id"
    ).fetchall():
        rules.setdefault(endpoint_id, []).append(rule)
    return {
        endpoint_id: " | ".join(rules.get(endpoint_id, ())) or name
        for endpoint_id, name in conn.execute("SELECT id, name FROM endpoints").fetchall()
    }


def _method(method: str) -> str:
    upper = method.upper()
    return upper if upper in KNOWN_METHODS else "_OTHER"


# -- the exposition ------------------------------------------------------------------------------


def render(metrics: Metrics, *, openmetrics: bool = False) -> str:
    """The exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0 (``# UNIT``, counters
    named without ``_total`` in their family, ``# EOF``)."""
    lines = [
        f"# HELP {DURATION_METRIC} {_DURATION_HELP}",
        f"# TYPE {DURATION_METRIC} histogram",
    ]
    if openmetrics:
        lines.append(f"# UNIT {DURATION_METRIC} seconds")
    bounds = [*(_number(b) for b in LE_BOUNDS_S), "+Inf"]
    for series in metrics.durations:
        labels = (
            f'http_route="{escape_label_value(series.route)}",'
            f'http_request_method="{escape_label_value(series.method)}",'
            f'http_response_status_code="{series.status}"'
        )
        cumulative = 0
        for bound, count in zip(bounds, series.counts, strict=True):
            cumulative += count
            lines.append(f'{DURATION_METRIC}_bucket{{{labels},le="{bound}"}} {cumulative}')
        lines.append(f"{DURATION_METRIC}_sum{{{labels}}} {_number(series.sum_s)}")
        lines.append(f"{DURATION_METRIC}_count{{{labels}}} {cumulative}")
    family = DROPPED_METRIC if openmetrics else f"{DROPPED_METRIC}_total"
    lines += [
        f"# HELP {family} {_DROPPED_HELP}",
        f"# TYPE {family} counter",
        f"{DROPPED_METRIC}_total {metrics.dropped}",
    ]
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header prefers OpenMetrics text to Prometheus text (a tie, a
    wildcard or no header: Prometheus text, which every scraper reads). Any version of
    OpenMetrics counts: Prometheus asks for 1.0.0 and 0.0.1 and reads 1.0.0 for both."""
    best = {"application/openmetrics-text": 0.0, "text/plain": 0.0}
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if media not in best:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best[media] = max(best[media], quality)
    return best["application/openmetrics-text"] > best["text/plain"]


def escape_label_value(value: str) -> str:
    """A label value as both formats quote it: backslash, double quote and line feed escaped;
    a lone surrogate (never stored, but never trusted) replaced so the text encodes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return escaped.encode("utf-8", "replace").decode("utf-8")


def _number(value: float) -> str:
    """A float as both formats read it: Python's shortest round-trip form."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "NaN" if math.isnan(value) else repr(float(value))


# -- a short cache -------------------------------------------------------------------------------


#: a reading is reused at least this many times as long as it took
REUSE_FACTOR = 10


class MetricsCache:
    """The last reading, reused for ``ttl_s`` and at least :data:`REUSE_FACTOR` times as long
    as it took: scrapers of many Prometheus servers (or one scraping often) cost one reading
    per period per process, and reading a very big store takes at most a tenth of it. One
    reading at a time; the requests that arrive meanwhile wait for it and share it."""

    def __init__(
        self,
        read: Callable[[], Metrics],
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[float, Metrics] | None = None
        self._lock = threading.Lock()

    def get(self) -> Metrics:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now < self._cached[0]:
                return self._cached[1]
            metrics = self._read()
            took = self._clock() - now
            self._cached = (now + max(self._ttl_s, REUSE_FACTOR * took), metrics)
            return metrics
