"""A finding: what changed, where and when it started, against what, for whom, and the call
paths that hold it -- as data, and as the JSON ``flamewatch changes --json`` prints
(docs/changes.schema.json). :mod:`.findings` derives them; this module only holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .calltree import CallPath
from .flames import Profile

__all__ = ["Direction", "Finding", "Start", "iso_time"]

Direction = Literal["slower", "faster"]


@dataclass(frozen=True)
class Start:
    """The version where a change began that had too few requests to show it on its own."""

    version: str
    requests: int
    ratio: float  # its median against the version compared against
    p_value: float
    significant: bool  # whether its own comparison flagged the change


@dataclass(frozen=True)
class Finding:
    """A change that got flagged: where and when it started, against what, how large and how
    certain, for whom, and the call paths that hold it."""

    endpoint: str
    version: str  # where it started (a time finding: the version it happened in)
    against: str  # the version compared against (a time finding: the same version)
    verdict: Direction
    ratio: float  # of the medians, after / before
    ci: tuple[float, float]  # 95 % confidence interval of the ratio
    p_value: float
    group: str | None  # the one user or group it concerns; None: all users
    paths: list[CallPath]  # the largest first
    mean_before_ms: float  # mean duration per request (the group's, for a group finding)
    mean_after_ms: float
    requests_before: int
    requests_after: int
    confirmed_in: str | None = None  # the version that confirms a change started in `version`
    start: Start | None = None
    since: float | None = None  # a time finding: when it started (Unix time)
    rest_ratio: float | None = None  # a group finding: the other users' ratio
    others_changed: bool = False  # a group finding: the endpoint as a whole changed too
    profile_group: str | None = None  # whose aggregated profiles give the paths
    before: Profile | None = field(default=None, compare=False, repr=False)
    after: Profile | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> Literal["version", "time"]:
        return "version" if self.since is None else "time"

    def to_json(self) -> dict[str, Any]:
        """The finding as ``flamewatch changes --json`` prints it (docs/changes.schema.json)."""
        start = self.start
        return {
            "endpoint": self.endpoint,
            "kind": self.kind,
            "version": self.version,
            "against": self.against,
            "since": None if self.since is None else iso_time(self.since),
            "confirmed_in": self.confirmed_in,
            "started": None
            if start is None
            else {
                "version": start.version,
                "requests": start.requests,
                "ratio": _number(start.ratio),
                "p": start.p_value,
                "significant": start.significant,
            },
            "verdict": self.verdict,
            "ratio": _number(self.ratio),
            "ci": [_number(self.ci[0]), _number(self.ci[1])],
            "p": self.p_value,
            "group": self.group,
            "rest_ratio": None if self.rest_ratio is None else _number(self.rest_ratio),
            "requests_before": self.requests_before,
            "requests_after": self.requests_after,
            "mean_ms_before": round(self.mean_before_ms, 3),
            "mean_ms_after": round(self.mean_after_ms, 3),
            "functions": [path.names for path in self.paths],
            "ms_before": [round(path.before_ms, 3) for path in self.paths],
            "ms_after": [round(path.after_ms, 3) for path in self.paths],
        }


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _number(value: float) -> float | None:
    """A ratio for JSON: rounded, ``None`` where it is infinite (a median of zero before)."""
    return round(value, 4) if math.isfinite(value) else None
