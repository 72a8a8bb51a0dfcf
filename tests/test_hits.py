"""The utilization page's charts from one read of ``hits_hourly`` (summed per endpoint and local
day, and per hour) are exactly the charts of every stored hour, in any time zone, across
daylight saving time changes, on both backends."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from helpers import Database

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.figures import hits_per_day_figure, hour_heatmap_figure
from flamewatch.reports.hits import hits_over_time, offset_periods
from flamewatch.reports.site import read_site
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import ProcessInfo, RequestRecord, make_store, resolve_database

HOUR = 3600
# 2026-03-28 00:00 UTC: ten days over Europe's switch to summer time (2026-03-29)
SPRING = int(datetime(2026, 3, 28, tzinfo=timezone.utc).timestamp())
# 2026-10-24 00:00 UTC: ten days over the switch back (2026-10-25), and America's (11-01)
AUTUMN = int(datetime(2026, 10, 24, tzinfo=timezone.utc).timestamp())
ZONES = (
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",  # summer time ends at midnight: 00:00 becomes 23:00 of the day before
)


def _record(started_at: float, endpoint: str) -> RequestRecord:
    return RequestRecord(
        endpoint=endpoint,
        rule=f"/{endpoint}",
        method="GET",
        status=200,
        started_at=started_at,
        duration_ms=2.0,
        group=None,
        client_ip=None,
        is_outlier=False,
        threshold_ms=None,
    )


def _store(database: Database) -> int:
    """Requests in most hours of two ten-day stretches, a few per hour, to two endpoints, and
    in every hour of the first stretch to a third (summed as one slice: see
    ``hits._per_hour``); returns how many."""
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        process = store.register_process(ProcessInfo("h", 1, "1.0", "config", SPRING, "t"))
        records = []
        for start in (SPRING, AUTUMN):
            for hour in range(0, 240, 1):
                if hour % 7 == 3:
                    continue  # some hours without requests
                at = start + hour * HOUR
                records += [_record(at + 60 * i, "a") for i in range(1 + hour % 3)]
                if hour % 2:
                    records.append(_record(at + 30, "b"))
            if start == SPRING:
                records += [_record(start + hour * HOUR + 90, "c") for hour in range(240)]
        store.write_requests(process, records)
    finally:
        store.close()
    return len(records)


@pytest.mark.parametrize("zone", ZONES)
def test_charts_from_one_read_equal_those_of_every_hour(store_db: Database, zone: str) -> None:
    requests = _store(store_db)
    tz = ZoneInfo(zone)
    with open_readonly(str(store_db)) as conn:
        every_hour = ReportData(conn).hourly_hits()
        hits = hits_over_time(conn, tz)
    per_day, per_hour = hits.per_local_day, hits.per_hour
    assert sum(h.count for h in per_day) == sum(h.count for h in every_hour) == requests
    assert sum(h.count for h in per_hour) == requests
    assert len(per_day) < len(every_hour) / 10  # a row per endpoint and day, not per hour
    assert hits_per_day_figure(per_day, tz) == hits_per_day_figure(every_hour, tz)
    assert hour_heatmap_figure(per_hour, tz) == hour_heatmap_figure(every_hour, tz)
    # one item per endpoint and local day (a day a change of offset splits too), at the
    # endpoint's first stored hour of that day
    days = {(h.endpoint, datetime.fromtimestamp(h.hour, tz).date()) for h in per_day}
    assert len(days) == len(per_day)
    for item in per_day:
        day = datetime.fromtimestamp(item.hour, tz).date()
        mine = [h.hour for h in every_hour if h.endpoint == item.endpoint]
        assert item.hour == min(h for h in mine if datetime.fromtimestamp(h, tz).date() == day)


def test_an_empty_store_has_no_hits_over_time(store_db: Database) -> None:
    store = make_store(resolve_database(str(store_db), "."))
    store.open()
    store.close()
    with open_readonly(str(store_db)) as conn:
        hits = hits_over_time(conn, ZoneInfo("Europe/Paris"))
    assert hits.per_local_day == []
    assert hits.per_hour == []


@pytest.mark.parametrize("zone", ZONES)
def test_every_hour_is_in_the_period_of_its_utc_offset(zone: str) -> None:
    tz = ZoneInfo(zone)
    for start in (SPRING, AUTUMN):
        last = start + 240 * HOUR
        periods = offset_periods(tz, start, last)
        assert [until for until, _ in periods] == sorted(until for until, _ in periods)
        for hour in range(start, last + HOUR, HOUR):
            offset = next(offset for until, offset in periods if hour < until)
            delta = datetime.fromtimestamp(hour, tz).utcoffset()
            assert delta is not None
            assert offset == delta.total_seconds()


def test_a_zone_that_changes_its_offset_gets_a_period_each() -> None:
    paris = ZoneInfo("Europe/Paris")
    periods = offset_periods(paris, SPRING, AUTUMN + 240 * HOUR)
    # winter (+1 h) until the spring switch, summer (+2 h) until the autumn one, winter again
    switch = int(datetime(2026, 3, 29, 1, tzinfo=timezone.utc).timestamp())
    back = int(datetime(2026, 10, 25, 1, tzinfo=timezone.utc).timestamp())
    assert periods == [(switch, 3600), (back, 7200), (AUTUMN + 241 * HOUR, 3600)]
    assert offset_periods(ZoneInfo("UTC"), SPRING, AUTUMN) == [(AUTUMN + HOUR, 0)]


@pytest.mark.parametrize("live", [True, False], ids=["live", "static"])
def test_an_endpoint_pages_hits_chart_is_that_of_every_hour_of_it(
    store_db: Database, live: bool
) -> None:
    _store(store_db)
    tz = ZoneInfo("America/New_York")
    with open_readonly(str(store_db)) as conn:
        every_hour = ReportData(conn).hourly_hits()
    site = read_site(str(store_db), timezone=tz.key, live=live)
    for name in ("a", "b", "c"):
        view = site.reading.endpoint_view(name)
        mine = [h for h in every_hour if h.endpoint == name]
        assert (
            len(view.per_day) <= 22 < len(mine) / 5
        )  # two ten-day stretches: <= 11 local days each
        assert hits_per_day_figure(view.per_day, tz, stacked=False) == hits_per_day_figure(
            mine, tz, stacked=False
        )
