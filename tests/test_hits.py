"""The utilization page's charts from rows grouped in SQL (per endpoint and local day, and per
hour) are exactly the charts of every stored hour, in any time zone, across daylight saving
time changes, on both backends."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from helpers import Database

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.figures import hits_per_day_figure, hour_heatmap_figure
from flamewatch.reports.hits import hits_per_hour, hits_per_local_day, local_day_sql
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import ProcessInfo, RequestRecord, make_store, resolve_database

HOUR = 3600
# 2026-03-28 00:00 UTC: ten days over Europe's switch to summer time (2026-03-29)
SPRING = int(datetime(2026, 3, 28, tzinfo=timezone.utc).timestamp())
# 2026-10-24 00:00 UTC: ten days over the switch back (2026-10-25), and America's (11-01)
AUTUMN = int(datetime(2026, 10, 24, tzinfo=timezone.utc).timestamp())
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


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
    """Requests in most hours of two ten-day stretches, a few per hour, to two endpoints;
    returns how many."""
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
        store.write_requests(process, records)
    finally:
        store.close()
    return len(records)


@pytest.mark.parametrize("zone", ZONES)
def test_charts_from_grouped_rows_equal_those_of_every_hour(store_db: Database, zone: str) -> None:
    requests = _store(store_db)
    tz = ZoneInfo(zone)
    with open_readonly(str(store_db)) as conn:
        every_hour = ReportData(conn).hourly_hits()
        per_day = hits_per_local_day(conn, tz)
        per_hour = hits_per_hour(conn)
    assert sum(h.count for h in per_day) == sum(h.count for h in every_hour) == requests
    assert len(per_day) < len(every_hour) / 10  # a row per endpoint and day, not per hour
    assert hits_per_day_figure(per_day, tz) == hits_per_day_figure(every_hour, tz)
    assert hour_heatmap_figure(per_hour, tz) == hour_heatmap_figure(every_hour, tz)


def test_a_zone_that_changes_its_offset_gets_a_case_per_period() -> None:
    paris = ZoneInfo("Europe/Paris")
    sql = local_day_sql("hour", paris, SPRING, AUTUMN + 240 * HOUR)
    # winter (+1 h) until the spring switch, summer (+2 h) until the autumn one, winter again
    switch = int(datetime(2026, 3, 29, 1, tzinfo=timezone.utc).timestamp())
    back = int(datetime(2026, 10, 25, 1, tzinfo=timezone.utc).timestamp())
    assert sql == (
        f"(hour + CASE WHEN hour < {switch} THEN 3600 WHEN hour < {back} THEN 7200"
        " ELSE 3600 END) / 86400"
    )
    assert local_day_sql("hour", ZoneInfo("UTC"), SPRING, AUTUMN) == "(hour + 0) / 86400"
