"""The latency histograms a store should hold, recomputed from its raw rows, and the check that
the stored ones agree: every count exactly, every sum of durations to rounding.

Recomputed here with :func:`~flamewatch.sampler.histogram.bucket_of` and plain Python, apart
from the writer's fold, so that a fold that drifted from its rows is caught.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import Database, rows

from flamewatch.sampler.histogram import bucket_of

__all__ = [
    "Tables",
    "assert_coarse_tables_match",
    "assert_histograms_match_rows",
    "coarse_tables",
    "expected_coarse",
    "expected_tables",
    "stored_tables",
]


@dataclass
class Tables:
    """The four tables as dicts: key -> count (or counts and sums)."""

    latency: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)
    hourly: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)
    total: dict[tuple[int, str, int, int], list[float]] = field(default_factory=dict)
    traffic: dict[tuple[int, int, int, int, str, int], list[float]] = field(default_factory=dict)


def expected_tables(database: Database, *, where: str = "", args: tuple[Any, ...] = ()) -> Tables:
    """The tables as the rows of ``requests`` (those ``where`` selects) make them, every group
    with its own rows (no cap): group 0 for a request without one."""
    tables = Tables()
    for e, v, g, p, method, status, started, ms, outlier in rows(
        database,
        "SELECT endpoint_id, version_id, group_id, process_id, method, status, started_at,"
        f" duration_ms, is_outlier FROM requests {where} ORDER BY id",
        *args,
    ):
        bucket, hour = bucket_of(ms), int(started // 3600) * 3600
        tables.latency[(e, v, g or 0, bucket)] += 1
        tables.hourly[(e, v, hour, bucket)] += 1
        total = tables.total.setdefault((e, method, status, bucket), [0, 0.0])
        total[0] += 1
        total[1] += ms
        traffic = tables.traffic.setdefault((e, v, p, hour, method, status), [0, 0, 0.0])
        traffic[0] += 1
        traffic[1] += outlier
        traffic[2] += ms
    return tables


def stored_tables(database: Database) -> Tables:
    """The four tables as the store holds them."""
    tables = Tables()
    for e, v, g, b, n in rows(
        database, "SELECT endpoint_id, version_id, group_id, bucket, count FROM latency"
    ):
        tables.latency[(e, v, g, b)] = n
    for e, v, h, b, n in rows(
        database, "SELECT endpoint_id, version_id, hour, bucket, count FROM latency_hourly"
    ):
        tables.hourly[(e, v, h, b)] = n
    for e, m, s, b, n, total in rows(
        database, "SELECT endpoint_id, method, status, bucket, count, sum_ms FROM latency_total"
    ):
        tables.total[(e, m, s, b)] = [n, total]
    for e, v, p, h, m, s, hits, outliers, total in rows(
        database,
        "SELECT endpoint_id, version_id, process_id, hour, method, status, hits, outliers,"
        " sum_ms FROM traffic",
    ):
        tables.traffic[(e, v, p, h, m, s)] = [hits, outliers, total]
    return tables


@dataclass
class Coarse:
    """Schema 5's tables as dicts: key -> count (or counts and sums)."""

    versions: Counter[tuple[int, int, int]] = field(default_factory=Counter)
    groups: Counter[tuple[int, int, int]] = field(default_factory=Counter)
    daily: Counter[tuple[int, int, int, int]] = field(default_factory=Counter)
    daily_traffic: dict[tuple[int, int, int], list[float]] = field(default_factory=dict)
    hits: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    processes: dict[tuple[int, int], list[int]] = field(default_factory=dict)


def expected_coarse(tables: Tables) -> Coarse:
    """What schema 5's tables must hold: the grouped sums of schema 4's tables ``tables``."""
    coarse = Coarse()
    for (e, v, g, b), n in tables.latency.items():
        coarse.versions[(e, v, b)] += n
        coarse.groups[(e, v, g)] += n
    for (e, v, hour, b), n in tables.hourly.items():
        coarse.daily[(e, v, hour // 86400 * 86400, b)] += n
    for (e, v, p, hour, _, _), (hits, outliers, total) in tables.traffic.items():
        day = coarse.daily_traffic.setdefault((e, v, hour // 86400 * 86400), [0, 0, 0.0])
        day[0] += hits
        day[1] += outliers
        day[2] += total
        hour_hits = coarse.hits.setdefault((e, hour), [0, 0])
        hour_hits[0] += int(hits)
        hour_hits[1] += int(outliers)
        served = coarse.processes.setdefault((p, hour // 86400 * 86400), [0, 0])
        served[0] += int(hits)
        served[1] += int(outliers)
    return coarse


def coarse_tables(database: Database) -> Coarse:
    """Schema 5's tables as the store holds them."""
    coarse = Coarse()
    for e, v, b, n in rows(
        database, "SELECT endpoint_id, version_id, bucket, count FROM latency_version"
    ):
        coarse.versions[(e, v, b)] = n
    for e, v, g, n in rows(
        database, "SELECT endpoint_id, version_id, group_id, hits FROM group_hits"
    ):
        coarse.groups[(e, v, g)] = n
    for e, v, d, b, n in rows(
        database, "SELECT endpoint_id, version_id, day, bucket, count FROM latency_daily"
    ):
        coarse.daily[(e, v, d, b)] = n
    for e, v, d, hits, outliers, total in rows(
        database,
        "SELECT endpoint_id, version_id, day, hits, outliers, sum_ms FROM traffic_daily",
    ):
        coarse.daily_traffic[(e, v, d)] = [hits, outliers, total]
    for e, h, hits, outliers in rows(
        database, "SELECT endpoint_id, hour, hits, outliers FROM hits_hourly"
    ):
        coarse.hits[(e, h)] = [hits, outliers]
    for p, d, hits, outliers in rows(
        database, "SELECT process_id, day, hits, outliers FROM process_hits"
    ):
        coarse.processes[(p, d)] = [hits, outliers]
    return coarse


def assert_coarse_tables_match(database: Database, tables: Tables | None = None) -> Coarse:
    """Fail unless schema 5's tables are exactly the grouped sums of schema 4's (``tables``,
    or those stored), every count exactly, every sum of durations to rounding."""
    expected = expected_coarse(stored_tables(database) if tables is None else tables)
    found = coarse_tables(database)
    assert found.versions == expected.versions
    assert found.groups == expected.groups
    assert found.daily == expected.daily
    assert found.hits == expected.hits
    assert found.processes == expected.processes
    assert _counts(found.daily_traffic) == _counts(expected.daily_traffic)
    assert _sums(found.daily_traffic) == pytest.approx(
        _sums(expected.daily_traffic), rel=1e-9, abs=1e-9
    )
    return found


def _counts(table: dict[Any, list[float]]) -> dict[Any, list[int]]:
    return {key: [int(v) for v in values[:-1]] for key, values in table.items()}


def _sums(table: dict[Any, list[float]]) -> dict[Any, float]:
    return {key: values[-1] for key, values in table.items()}


def assert_histograms_match_rows(database: Database, *, capped: bool = False) -> Tables:
    """Fail unless the stored histograms are exactly what the rows make, and schema 5's
    coarser tables exactly the grouped sums of those.

    ``capped``: groups may have been counted under -1 ("others"); then the all-groups counts
    must still match, each admitted group may hold only requests of its own, and the rest is
    under -1. Without it every group has its own rows. Returns the stored tables.
    """
    expected, found = expected_tables(database), stored_tables(database)
    assert_coarse_tables_match(database, found)
    assert found.hourly == expected.hourly
    assert _counts(found.total) == _counts(expected.total)
    assert _sums(found.total) == pytest.approx(_sums(expected.total), rel=1e-9, abs=1e-9)
    assert _counts(found.traffic) == _counts(expected.traffic)
    assert _sums(found.traffic) == pytest.approx(_sums(expected.traffic), rel=1e-9, abs=1e-9)
    if not capped:
        assert found.latency == expected.latency
        return found
    all_groups: Counter[tuple[int, int, int]] = Counter()
    for (e, v, _, b), n in found.latency.items():
        all_groups[(e, v, b)] += n
    expected_all: Counter[tuple[int, int, int]] = Counter()
    for (e, v, _, b), n in expected.latency.items():
        expected_all[(e, v, b)] += n
    assert all_groups == expected_all
    others: defaultdict[tuple[int, int, int], int] = defaultdict(int)
    for (e, v, g, b), n in expected.latency.items():
        kept = found.latency.get((e, v, g, b), 0)
        assert kept <= n, (e, v, g, b)  # an admitted group holds only its own requests
        others[(e, v, b)] += n - kept
    assert {k: n for k, n in others.items() if n} == {
        (e, v, b): n for (e, v, g, b), n in found.latency.items() if g == -1 and n
    }
    return found
