"""Requests over time for the utilization page, grouped in SQL as finely as its charts show.

The writer keeps ``hits_hourly`` (schema 5): requests per endpoint and UTC hour. A store of
20 endpoints over 180 days holds 86,400 of those rows; the utilization page shows requests per
endpoint per *local* day (a bar chart) and per hour of the week (a heatmap), so it reads:

- :func:`hits_per_local_day`: the rows grouped in SQL by endpoint and local day of the site's
  time zone (one row per endpoint and day, 3,600 for that store). A local day is
  ``(hour + offset) / 86400`` where the offset is the zone's UTC offset at that hour: the few
  offsets a zone had over the stored hours (daylight saving time changes it twice a year) are
  found here and written into the query as a ``CASE`` on the hour.
- :func:`hits_per_hour`: every endpoint's rows summed per UTC hour (4,320 rows for 180 days),
  which the heatmap puts in their local hour of the week.

Each item is a :class:`~.model.HourlyHits` whose ``hour`` lies in its local day (or is its
hour), so the charts bucket these exactly as they would bucket every stored hour.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flamewatch.sampler.store.connection import StoreConnection

from .model import HourlyHits

__all__ = ["ALL_ENDPOINTS", "hits_per_hour", "hits_per_local_day", "local_day_sql"]

#: the ``endpoint`` of :func:`hits_per_hour`'s items, which count every endpoint
ALL_ENDPOINTS = ""

_HOUR, _DAY = 3600, 86_400


def hits_per_hour(conn: StoreConnection) -> list[HourlyHits]:
    """Requests of every endpoint per UTC hour, in time order."""
    rows = conn.execute(
        "SELECT hour, CAST(SUM(hits) AS BIGINT) FROM hits_hourly GROUP BY hour ORDER BY hour"
    )
    return [HourlyHits(ALL_ENDPOINTS, int(hour), int(count)) for hour, count in rows if count]


def hits_per_local_day(conn: StoreConnection, tz: ZoneInfo) -> list[HourlyHits]:
    """Requests per endpoint per local day of ``tz``: one item per endpoint and day, at the
    first stored hour of that day."""
    first, last = conn.execute("SELECT MIN(hour), MAX(hour) FROM hits_hourly").fetchone()
    if first is None:
        return []
    day = local_day_sql("h.hour", tz, int(first), int(last))
    rows = conn.execute(
        "SELECT e.name, MIN(h.hour), CAST(SUM(h.hits) AS BIGINT) FROM hits_hourly h"
        f" JOIN endpoints e ON e.id = h.endpoint_id GROUP BY e.name, {day}"
    )
    found = [HourlyHits(name, int(hour), int(count)) for name, hour, count in rows if count]
    return sorted(found, key=lambda h: (h.endpoint, h.hour))


def local_day_sql(column: str, tz: ZoneInfo, first: int, last: int) -> str:
    """SQL of the local day number (days since the epoch, local time) of ``column``, a Unix
    time of an hour's start between ``first`` and ``last``. Only integers are written into it,
    from the zone's offsets: no value of the store."""
    periods = _offsets(tz, first, last)
    if len(periods) == 1:
        return f"({column} + {periods[0][1]}) / {_DAY}"
    cases = " ".join(f"WHEN {column} < {until} THEN {offset}" for until, offset in periods[:-1])
    return f"({column} + CASE {cases} ELSE {periods[-1][1]} END) / {_DAY}"


def _offsets(tz: ZoneInfo, first: int, last: int) -> list[tuple[int, int]]:
    """The zone's UTC offsets (seconds) from ``first`` to ``last``: (the hour each ends
    before, offset), in time order; a day at a time, then the changing day hour by hour."""
    periods: list[tuple[int, int]] = []
    current = _offset(tz, first)
    day = first
    while day < last:
        following = min(day + _DAY, last)
        if _offset(tz, following) != current:
            hour = day
            while _offset(tz, hour + _HOUR) == current:
                hour += _HOUR
            periods.append((hour + _HOUR, current))
            current = _offset(tz, hour + _HOUR)
            day = hour + _HOUR
            continue
        day = following
    periods.append((last + _HOUR, current))
    return periods


def _offset(tz: ZoneInfo, at: int) -> int:
    delta = datetime.fromtimestamp(at, timezone.utc).astimezone(tz).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())
