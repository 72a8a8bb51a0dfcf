"""Requests over time for the utilization page, read in one pass over ``hits_hourly``.

The writer keeps ``hits_hourly`` (schema 5): requests per endpoint and UTC hour. A store of
20 endpoints over 180 days holds 86,400 of those rows; the utilization page shows requests per
endpoint per *local* day (a bar chart) and per hour of the week (a heatmap). Grouping the rows
in SQL by local day, or by hour, makes the database sort every row (SQLite: 45-55 ms each at
10^7 requests, a 180-day store); reading them in the primary key's order needs no sort. So
:func:`hits_over_time` reads a row per endpoint -- its hours and their hits as two JSON arrays,
in hour order (14 ms for that store) -- and sums them here:

- every endpoint's hits per UTC hour, which the heatmap puts in their local hour of the week;
- per endpoint and local day of the site's time zone: a local day is ``(hour + offset) /
  86400`` where the offset is the zone's UTC offset at that hour (the few offsets a zone had
  over the stored hours, daylight saving time changing it twice a year, are found once:
  :func:`offset_periods`). Local days follow hours in order, so the first hour of each day is
  found by bisection, and an endpoint's hours of one day are a slice of its sorted hours,
  summed at once.

Each item is a :class:`~.model.HourlyHits` whose ``hour`` lies in its local day (or is its
hour), so the charts bucket these exactly as they would bucket every stored hour.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import add
from zoneinfo import ZoneInfo

import orjson

from flamewatch.sampler.store.connection import StoreConnection

from .model import HourlyHits

__all__ = [
    "ALL_ENDPOINTS",
    "HitsOverTime",
    "hits_over_time",
    "hits_per_local_day",
    "offset_periods",
]

#: the ``endpoint`` of the items per hour, which count every endpoint
ALL_ENDPOINTS = ""

_HOUR, _DAY = 3600, 86_400


@dataclass(frozen=True)
class HitsOverTime:
    """What the utilization page charts."""

    #: requests per endpoint per local day: one item per endpoint and day, at the first stored
    #: hour of that day; by endpoint, then hour
    per_local_day: list[HourlyHits]
    #: requests of every endpoint per UTC hour, in time order
    per_hour: list[HourlyHits]


def hits_over_time(conn: StoreConnection, tz: ZoneInfo) -> HitsOverTime:
    """Requests per endpoint per local day of ``tz``, and per UTC hour, from one read."""
    series = _read_series(conn)
    return HitsOverTime(per_local_day=_per_local_day(series, tz), per_hour=_per_hour(series))


def hits_per_local_day(
    conn: StoreConnection, tz: ZoneInfo, *, endpoint: str | None = None
) -> list[HourlyHits]:
    """:attr:`HitsOverTime.per_local_day` alone; with ``endpoint`` (a name), of that endpoint
    alone (its rows only, by the primary key): an endpoint's page."""
    return _per_local_day(_read_series(conn, endpoint), tz)


_Series = list[tuple[str | None, list[int], list[int]]]


def _read_series(conn: StoreConnection, endpoint: str | None = None) -> _Series:
    """(endpoint name, its hours ascending, their hits) of each endpoint with rows: a row
    each, of two JSON arrays (a row of no endpoint has the name ``None``)."""
    names = dict(conn.execute("SELECT id, name FROM endpoints").fetchall())
    where = ""
    args: tuple[int, ...] = ()
    if endpoint is not None:  # ids start at 1: an unknown endpoint has no rows
        ids = {name: endpoint_id for endpoint_id, name in names.items()}
        where, args = " WHERE endpoint_id = ?", (ids.get(endpoint, 0),)
    hours_json, hits_json = conn.json_list("hour", "hour"), conn.json_list("hits", "hour")
    return [
        (names.get(endpoint_id), orjson.loads(hour_list), orjson.loads(hit_list))
        for endpoint_id, hour_list, hit_list in conn.execute(
            f"SELECT endpoint_id, {hours_json}, {hits_json} FROM hits_hourly{where}"
            " GROUP BY endpoint_id",
            args,
        )
    ]


def _per_hour(series: _Series) -> list[HourlyHits]:
    """Hits per hour of all ``series`` together, in time order (hours of no hit left out).

    An endpoint requested every hour of its span -- a busy one, which has most of the rows --
    is added to a list of every hour as one slice (no Python step per hour); the others hour
    by hour."""
    starts = [hours[0] for _, hours, _ in series if hours]
    if not starts:
        return []
    first = min(starts)
    span = (max(hours[-1] for _, hours, _ in series if hours) - first) // _HOUR + 1
    every_hour = [0] * span
    others: dict[int, int] = {}
    for _, hours, hits in series:
        if not hours:
            continue
        begin, misaligned = divmod(hours[0] - first, _HOUR)
        if not misaligned and hours[-1] - hours[0] == _HOUR * (len(hours) - 1):
            end = begin + len(hours)
            every_hour[begin:end] = map(add, every_hour[begin:end], hits)
            continue
        for hour, count in zip(hours, hits, strict=True):
            others[hour] = others.get(hour, 0) + count
    found = {first + i * _HOUR: count for i, count in enumerate(every_hour) if count}
    for hour, count in others.items():
        found[hour] = found.get(hour, 0) + count
    return [
        HourlyHits(ALL_ENDPOINTS, hour, count) for hour, count in sorted(found.items()) if count
    ]


def _per_local_day(series: _Series, tz: ZoneInfo) -> list[HourlyHits]:
    """Each endpoint's hits per local day of ``tz``, by endpoint, then hour."""
    spans = [(hours[0], hours[-1]) for _, hours, _ in series if hours]
    if not spans:
        return []
    periods = offset_periods(tz, min(s for s, _ in spans), max(e for _, e in spans))
    found = [
        item
        for name, hours, hits in series
        if name is not None  # (a row of no endpoint: counted per hour only, as ever)
        for item in _days(name, hours, hits, periods)
    ]
    return sorted(found, key=lambda h: (h.endpoint, h.hour))


def _days(
    name: str, hours: list[int], hits: list[int], periods: list[tuple[int, int]]
) -> list[HourlyHits]:
    """An endpoint's hours (ascending) summed per local day, given the zone's UTC offset
    ``periods`` (:func:`offset_periods`, covering the hours): within a period a local day's
    hours are one slice, whose end is found by bisection (a step per day, not per hour); a day
    that a change of offset splits is one item still."""
    found: list[HourlyHits] = []
    last_day, i = None, 0
    for until, offset in periods:
        end = bisect_left(hours, until, i)  # this period's hours: [i, end)
        while i < end:
            day = (hours[i] + offset) // _DAY
            following = bisect_left(hours, (day + 1) * _DAY - offset, i, end)
            count = sum(hits[i:following])
            if day == last_day:  # the same day on both sides of a change of offset
                found[-1] = HourlyHits(name, found[-1].hour, found[-1].count + count)
            else:
                found.append(HourlyHits(name, hours[i], count))
                last_day = day
            i = following
    return [item for item in found if item.count]


def offset_periods(tz: ZoneInfo, first: int, last: int) -> list[tuple[int, int]]:
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
