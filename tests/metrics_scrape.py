"""Scraping ``/flamewatch/metrics`` as Prometheus would, and checking what a parser cannot.

The text is read by ``prometheus_client``'s parsers (the Prometheus text parser, or the
stricter OpenMetrics one); on top of them every histogram is checked for what makes it one:
one series per label set, ``le`` ascending and ending at ``+Inf``, cumulative counts that never
fall, ``+Inf`` equal to ``_count``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

DURATION = "http_server_request_duration_seconds"
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"

Key = tuple[str, str, str]  # http_route, http_request_method, http_response_status_code


@dataclass
class Histogram:
    """One series of the duration histogram, as parsed."""

    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    sum: float | None = None
    count: float | None = None

    def cumulative(self) -> list[int]:
        return [int(value) for _, value in self.buckets]


Scraped = tuple[dict[str, Metric], dict[Key, Histogram]]


def parse(text: str, *, openmetrics: bool = False) -> Scraped:
    """The families by name, and the duration histogram's series checked and keyed by label
    values."""
    parser = parse_openmetrics if openmetrics else parse_prometheus
    families = {family.name: family for family in parser(text)}
    histograms: dict[Key, Histogram] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    duration = families.get(DURATION)
    for sample in duration.samples if duration is not None else ():
        labels = dict(sample.labels)
        identity = (sample.name, tuple(sorted(labels.items())))
        assert identity not in seen, f"duplicate series {identity}"
        seen.add(identity)
        le = labels.pop("le", None)
        assert set(labels) == {"http_route", "http_request_method", "http_response_status_code"}
        key = (
            labels["http_route"],
            labels["http_request_method"],
            labels["http_response_status_code"],
        )
        histogram = histograms.setdefault(key, Histogram())
        if sample.name == f"{DURATION}_bucket":
            assert le is not None
            histogram.buckets.append((float(le), sample.value))
        elif sample.name == f"{DURATION}_sum":
            histogram.sum = sample.value
        elif sample.name == f"{DURATION}_count":
            histogram.count = sample.value
        else:
            raise AssertionError(f"unexpected sample {sample}")
    for key, histogram in histograms.items():
        bounds = [le for le, _ in histogram.buckets]
        counts = histogram.cumulative()
        assert bounds == sorted(bounds), (key, bounds)
        assert math.isinf(bounds[-1]), (key, bounds)
        assert all(a <= b for a, b in itertools.pairwise(counts)), (key, counts)
        assert histogram.count == counts[-1], key
        assert histogram.sum is not None, key
        assert histogram.sum >= 0, key
    return families, histograms


def scrape(
    client: Any, *, openmetrics: bool = False, url: str = "/flamewatch/metrics", **kwargs: Any
) -> Scraped:
    """GET the metrics through a Flask test client and parse them (200 expected)."""
    headers = dict(kwargs.pop("headers", {}))
    if openmetrics:
        headers["Accept"] = OPENMETRICS_ACCEPT
    response = client.get(url, headers=headers, **kwargs)
    assert response.status_code == 200, response.text
    return parse(response.text, openmetrics=openmetrics)
