"""The report's plotly figures, built from aggregated numbers (never from request rows).

Each function returns a plain figure dict (``{"data": [...], "layout": {...}}``) for the
site's JSON data blocks. Box plots are drawn from precomputed quartiles and whiskers, so a
figure's size depends on the number of boxes, not on the number of requests. The layout uses an
empty template: plotly's default one would add ~10 KB to every chart. Every name in a figure
(endpoint, version, user or group) goes through :func:`~.text.plotly_text`: plotly draws
``<b>``, ``<br>``, ``<a href>`` and ``<span style>`` in tick labels, legends and hover text, and a
name is data; it is also cut to a chart label's length, so a figure's size never depends on how
long the stored names are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .model import Box, HourlyHits
from .text import plotly_text

__all__ = [
    "box_figure",
    "grouped_box_figure",
    "hits_per_day_figure",
    "hour_heatmap_figure",
    "medians_over_time_figure",
]

Figure = dict[str, Any]

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _layout(title: str | None = None, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "margin": {"l": 60, "r": 20, "t": 40 if title else 20, "b": 80},
        "font": {"family": "-apple-system, Segoe UI, Helvetica, Arial, sans-serif", "size": 12},
        "hovermode": "closest",
        "plot_bgcolor": "#fff",
        "xaxis": {"automargin": True, "gridcolor": "#eee"},
        "yaxis": {"automargin": True, "gridcolor": "#eee", "zerolinecolor": "#ccc"},
        "legend": {"orientation": "h", "y": -0.25},
    }
    if title:
        layout["title"] = {"text": title}
    layout.update(extra)
    return layout


def _box_trace(name: str, labels: Sequence[str], boxes: Sequence[Box]) -> dict[str, Any]:
    return {
        "type": "box",
        "name": plotly_text(name),
        "x": [plotly_text(label) for label in labels],
        "q1": [b.q1 for b in boxes],
        "median": [b.median for b in boxes],
        "q3": [b.q3 for b in boxes],
        "lowerfence": [b.lower_fence for b in boxes],
        "upperfence": [b.upper_fence for b in boxes],
        "mean": [b.mean for b in boxes],
        "boxpoints": False,
        "customdata": [[b.count, b.p90, b.p99] for b in boxes],
        "hovertemplate": "%{x}<br>median %{median:.2f} ms<br>q1 %{q1:.2f} / q3 %{q3:.2f}"
        "<br>p90 %{customdata[1]:.2f}, p99 %{customdata[2]:.2f}<br>%{customdata[0]} requests"
        "<extra>%{fullData.name}</extra>",
    }


def box_figure(items: Sequence[tuple[str, Box]], *, x_title: str) -> Figure:
    """One box per item, in the given order."""
    labels = [label for label, _ in items]
    trace = _box_trace("response time", labels, [box for _, box in items])
    return {
        "data": [trace],
        "layout": _layout(
            xaxis={
                "title": {"text": plotly_text(x_title)},
                "type": "category",
                "automargin": True,
            },
            yaxis={"title": {"text": "ms"}, "rangemode": "tozero", "automargin": True},
            showlegend=False,
        ),
    }


def grouped_box_figure(
    series: Mapping[str, Sequence[tuple[str, Box]]], *, x_order: Sequence[str], x_title: str
) -> Figure:
    """One trace per series (e.g. a user), boxes grouped along ``x_order`` (e.g. versions)."""
    data = []
    for name, items in series.items():
        by_label = dict(items)
        labels = [label for label in x_order if label in by_label]
        data.append(_box_trace(name, labels, [by_label[label] for label in labels]))
    return {
        "data": data,
        "layout": _layout(
            boxmode="group",
            xaxis={
                "title": {"text": plotly_text(x_title)},
                "type": "category",
                "categoryorder": "array",
                "categoryarray": [plotly_text(label) for label in x_order],
                "automargin": True,
            },
            yaxis={"title": {"text": "ms"}, "rangemode": "tozero", "automargin": True},
        ),
    }


def _local(hour: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(hour, tz)


def _local_hours(hits: Iterable[HourlyHits], tz: ZoneInfo) -> dict[int, datetime]:
    """Each distinct hour of ``hits`` in local time: converted once per hour, not once per
    endpoint and hour (a long store has tens of thousands of those)."""
    return {hour: _local(hour, tz) for hour in {item.hour for item in hits}}


def hits_per_day_figure(
    hits: Iterable[HourlyHits], tz: ZoneInfo, *, stacked: bool = True
) -> Figure:
    """Requests per endpoint per local day, as (stacked) bars."""
    hits = list(hits)
    day_of = {hour: moment.date().isoformat() for hour, moment in _local_hours(hits, tz).items()}
    per_endpoint: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in hits:
        per_endpoint[item.endpoint][day_of[item.hour]] += item.count
    days = set(day_of.values())
    order = sorted(days)
    data = [
        {
            "type": "bar",
            "name": plotly_text(endpoint),
            "x": order,
            "y": [counts.get(day, 0) for day in order],
            "hovertemplate": "%{x}: %{y} requests<extra>%{fullData.name}</extra>",
        }
        for endpoint, counts in sorted(per_endpoint.items())
    ]
    return {
        "data": data,
        "layout": _layout(
            barmode="stack" if stacked else "group",
            xaxis={"title": {"text": "day"}, "type": "category", "automargin": True},
            yaxis={"title": {"text": "requests"}, "automargin": True},
            showlegend=len(data) > 1,
        ),
    }


def hour_heatmap_figure(hits: Iterable[HourlyHits], tz: ZoneInfo) -> Figure:
    """Requests per hour of the day (columns) and day of the week (rows), local time."""
    hits = list(hits)
    cell_of = {h: (m.weekday(), m.hour) for h, m in _local_hours(hits, tz).items()}
    grid = [[0] * 24 for _ in _DAYS]
    for item in hits:
        weekday, hour = cell_of[item.hour]
        grid[weekday][hour] += item.count
    return {
        "data": [
            {
                "type": "heatmap",
                "z": grid,
                "x": [f"{h:02d}:00" for h in range(24)],
                "y": list(_DAYS),
                "colorscale": "Blues",
                "hovertemplate": "%{y} %{x}: %{z} requests<extra></extra>",
            }
        ],
        "layout": _layout(
            xaxis={"title": {"text": f"hour of the day ({tz.key})"}, "type": "category"},
            yaxis={"autorange": "reversed", "type": "category"},
        ),
    }


def medians_over_time_figure(
    series: Sequence[tuple[str, Sequence[tuple[float, float, int]]]],
    changes: Sequence[tuple[float, str]],
    tz: ZoneInfo,
) -> Figure:
    """The median of each time bucket, a line per version, and a dashed line at each change
    inside a version (``(time, label)``), in local time."""
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": plotly_text(version),
            "x": [_local_text(start, tz) for start, _, _ in points],
            "y": [round(median, 3) for _, median, _ in points],
            "customdata": [count for _, _, count in points],
            "hovertemplate": "%{x}: median %{y:.2f} ms (%{customdata} requests)"
            "<extra>%{fullData.name}</extra>",
        }
        for version, points in series
    ]
    shapes = [
        {
            "type": "line",
            "xref": "x",
            "yref": "paper",
            "x0": _local_text(at, tz),
            "x1": _local_text(at, tz),
            "y0": 0,
            "y1": 1,
            "line": {"color": "#b2182b", "dash": "dash", "width": 2},
        }
        for at, _ in changes
    ]
    annotations = [
        {
            "x": _local_text(at, tz),
            "xref": "x",
            "y": 1,
            "yref": "paper",
            "text": plotly_text(label),
            "showarrow": False,
            "xanchor": "left",
            "yanchor": "bottom",
            "font": {"color": "#b2182b"},
        }
        for at, label in changes
    ]
    return {
        "data": data,
        "layout": _layout(
            xaxis={"title": {"text": f"time ({tz.key})"}, "type": "date", "automargin": True},
            yaxis={"title": {"text": "median ms"}, "rangemode": "tozero", "automargin": True},
            shapes=shapes,
            annotations=annotations,
            showlegend=len(data) > 1,
        ),
    }


def _local_text(timestamp: float, tz: ZoneInfo) -> str:
    """A time as plotly's date axis reads it, in local time (plotly has no time zones)."""
    return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
