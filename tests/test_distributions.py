"""The findings' histograms read from a real store, on both backends: each version's series
by the day or the hour, every time bucket's histogram that of its stored durations."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from flamewatch.reports.distributions import DAY_S, HOUR_S, read_distributions
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store import ProcessInfo, RequestRecord, make_store, resolve_database
from flamewatch.sampler.store.connection import StoreConnection

START = 1_700_006_400.0  # a UTC midnight
#: version -> (first request, spacing in s, requests): 1.0 runs 5 days, 2.0 two hours
VERSIONS = {"1.0": (START, 900.0, 480), "2.0": (START + 6 * 86_400, 30.0, 240)}
ENDPOINTS = ("list", "show")


def _write(database: Path | str) -> dict[tuple[str, str, float, float], list[float]]:
    """Requests of both endpoints in both versions; their durations per endpoint, version,
    bucket width and bucket start, as the reader should find them."""
    rng = random.Random(4)
    expected: dict[tuple[str, str, float, float], list[float]] = defaultdict(list)
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        for version, (first, spacing, count) in VERSIONS.items():
            info = ProcessInfo("host", 1 + len(expected), version, "config", first, "t")
            process = store.register_process(info)
            records = []
            for i in range(count):
                endpoint = ENDPOINTS[i % 2]
                when = first + i * spacing
                ms = rng.lognormvariate(2.0 + i / count, 0.5)
                width = DAY_S if version == "1.0" else HOUR_S
                expected[(endpoint, version, width, when - when % width)].append(ms)
                records.append(
                    RequestRecord(
                        endpoint, f"/{endpoint}", "GET", 200, when, ms, None, None, False, None
                    )
                )
            store.write_requests(process, records)
    finally:
        store.close()
    return expected


def test_each_version_is_read_by_the_day_or_the_hour_as_it_ran(store_db: Path | str) -> None:
    expected = _write(store_db)
    with open_readonly(str(store_db)) as conn:
        distributions = read_distributions(StoreConnection.wrap(conn))
        only_show = read_distributions(StoreConnection.wrap(conn), endpoint="show")
    found: dict[tuple[str, str, float, float], Histogram] = {}
    for (endpoint, version), series in distributions.buckets.items():
        width = distributions.width(endpoint, version)
        starts = [start for start, _ in series]
        assert starts == sorted(starts)
        for start, histogram in series:
            found[(endpoint, version, width, start)] = histogram
    assert set(found) == set(expected)
    for key, durations in expected.items():
        want = Histogram.of(durations)
        assert found[key].counts == want.counts, key
        assert found[key].total == len(durations)
        assert found[key].quantile((1, 2)) == want.quantile((1, 2))
    for endpoint in ENDPOINTS:
        for version in VERSIONS:
            durations = [
                ms
                for (e, v, _, _), values in expected.items()
                if (e, v) == (endpoint, version)
                for ms in values
            ]
            total = distributions.totals[(endpoint, version)]
            assert total.counts == Histogram.of(durations).counts
            assert total.total == len(durations)
    assert {distributions.width(e, "1.0") for e in ENDPOINTS} == {DAY_S}
    assert {distributions.width(e, "2.0") for e in ENDPOINTS} == {HOUR_S}
    assert len(distributions.buckets[("list", "2.0")]) == 2  # two hours of version 2.0
    assert set(only_show.buckets) == {("show", "1.0"), ("show", "2.0")}
    for key, series in only_show.buckets.items():
        assert [(s, h.counts) for s, h in series] == [
            (s, h.counts) for s, h in distributions.buckets[key]
        ]


def test_a_time_bucket_read_out_of_order_is_put_in_order() -> None:
    """SQLite hands a group's rows to ``json_group_array`` in the order it scans them, the
    key's; nothing promises it, so the reader sorts what is not in order."""
    buckets, counts = [120, 7, 300, 45], [3, 1, 2, 9]
    histogram = Histogram.from_lists(buckets, counts)
    assert list(histogram.counts.items()) == [(7, 1), (45, 9), (120, 3), (300, 2)]
    assert histogram.quantile((1, 2)) == Histogram.from_counts(
        dict(zip(buckets, counts, strict=True))
    ).quantile((1, 2))
    in_order = Histogram.from_lists([7, 45], [1, 9])
    assert list(in_order.counts.items()) == [(7, 1), (45, 9)]
