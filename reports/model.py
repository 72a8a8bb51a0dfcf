"""What the report shows, as plain data: the contract between reading the store and the site.

:mod:`.aggregate` fills these from a store, doing the aggregation in the database (a page's
size depends on endpoints x versions x groups, never on the number of requests); the site
builder turns them into pages and plotly figures. Durations are milliseconds, times Unix
seconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Box", "Change", "EndpointRow", "HourlyHits", "VersionRow"]


@dataclass(frozen=True)
class Box:
    """A box plot's numbers for a set of durations (nearest-rank quantiles)."""

    count: int
    mean: float
    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float
    lower_fence: float  # the lowest duration >= q1 - 1.5 * (q3 - q1): the lower whisker
    upper_fence: float  # the highest duration <= q3 + 1.5 * (q3 - q1): the upper whisker
    p90: float
    p99: float


Verdict = Literal["slower", "faster", "unchanged", "uncertain"]


@dataclass(frozen=True)
class Change:
    """An endpoint's median in one version against the previous version it ran in."""

    endpoint: str
    version: str
    previous: str
    ratio: float  # median(version) / median(previous)
    ratio_low: float  # 95 % confidence interval of the ratio
    ratio_high: float
    p_value: float  # two-sided Mann-Whitney U test (normal approximation, tie-corrected)
    count: int
    previous_count: int
    verdict: Verdict  # slower/faster: large (beyond the threshold) and confident; else ...

    @property
    def is_regression(self) -> bool:
        return self.verdict == "slower"


@dataclass(frozen=True)
class EndpointRow:
    """One line of the overview."""

    name: str
    rules: list[str]
    methods: list[str]
    monitored: bool
    hits: int
    hits_last_day: int
    hits_last_week: int
    box: Box | None  # None when it was never requested
    outliers: int
    last_accessed: float | None
    change: Change | None  # latest version against the one before, when both have requests


@dataclass(frozen=True)
class VersionRow:
    """A version, in deployment order (first seen), with what changed in it."""

    name: str
    source: str
    first_seen: float
    last_seen: float
    requests: int
    outliers: int
    changes: list[Change] = field(default_factory=list)  # per endpoint, vs the previous version


@dataclass(frozen=True)
class HourlyHits:
    """Requests of one endpoint in one UTC hour (the site buckets them by day, or by hour of
    the week, in the chosen timezone)."""

    endpoint: str
    hour: int  # Unix time of the hour's start, UTC
    count: int
