"""Running statistics of response times and the outlier rule.

Pure code over numbers: no clock, no I/O, no threads. The writer thread feeds every finished
request's duration into the :class:`RunningStats` of its endpoint, and publishes the endpoint's
current threshold for the request threads (and the stack sampler) to compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["OutlierRule", "RunningStats"]


@dataclass(frozen=True)
class OutlierRule:
    """When is a request an outlier?

    After ``warmup`` requests of an endpoint (in the running version), a request is an outlier
    when its duration exceeds ``max(mean + k * stddev, factor * mean, min_ms)``.

    ``window`` bounds the memory of the statistics: the first ``window`` requests are weighed
    equally (Welford's algorithm), later ones with an exponential weight of ``1 / window``, so
    the statistics follow a slowly changing normal instead of being dominated by the distant
    past. Durations fed to the statistics are capped at the threshold in force (winsorized),
    so an incident of slow requests cannot quietly raise the bar it is measured against.
    """

    k: float = 3.0
    factor: float = 2.0
    min_ms: float = 5.0
    warmup: int = 30
    window: int = 1000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k) and self.k >= 0):
            raise ValueError(f"k must be a finite number >= 0, got {self.k!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be a finite number >= 1, got {self.factor!r}")
        if not (math.isfinite(self.min_ms) and self.min_ms >= 0):
            raise ValueError(f"min_ms must be a finite number >= 0, got {self.min_ms!r}")
        if not 2 <= self.warmup <= 30:
            raise ValueError(f"warmup must be an integer from 2 to 30, got {self.warmup!r}")
        if self.window < self.warmup:
            raise ValueError(f"window must be at least warmup ({self.warmup}), got {self.window!r}")

    def threshold_ms(self, stats: RunningStats) -> float | None:
        """The duration (ms) above which a request is an outlier, or None while warming up."""
        if stats.count < self.warmup:
            return None
        mean = stats.mean
        return max(mean + self.k * stats.stddev, self.factor * mean, self.min_ms)


class RunningStats:
    """Mean and variance of a stream of durations (ms), in O(1) memory.

    Welford's update while ``count < window``; an exponentially weighted update with weight
    ``1 / window`` after that. ``seed`` restores a state read back from the store.
    """

    __slots__ = ("_m2", "count", "mean", "window")

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        self.window = window
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # count * variance while count < window; variance * window after

    @classmethod
    def seed(cls, count: int, mean: float, variance: float, window: int = 1000) -> RunningStats:
        """A state equivalent to having seen ``count`` values of this mean and variance."""
        stats = cls(window)
        stats.count = max(0, count)
        stats.mean = mean if stats.count else 0.0
        stats._m2 = max(variance, 0.0) * min(stats.count, window)
        return stats

    @property
    def variance(self) -> float:
        """Population variance of the values seen (or of the recent window)."""
        n = min(self.count, self.window)
        return self._m2 / n if n else 0.0

    @property
    def stddev(self) -> float:
        return math.sqrt(self.variance)

    def add(self, value: float) -> None:
        self.add_all((value,))

    def add_all(self, values: Iterable[float], cap: float | None = None) -> None:
        """:meth:`add` each of ``values`` in turn, each at most ``cap`` when it is given."""
        # Welford's update for the first ``window`` values, then the weighted one: two loops,
        # so that the second (every value once the window is full: the writer's steady state)
        # tests neither the count nor the update to make (the same arithmetic, so the same
        # floats).
        count, mean, m2, window = self.count, self.mean, self._m2, self.window
        rest = iter(values)
        if count < window:
            for given in rest:
                value = given if cap is None or given <= cap else cap
                count += 1
                delta = value - mean
                mean += delta / count
                m2 += delta * (value - mean)
                if count == window:
                    break
        alpha = 1.0 / window
        keep = 1.0 - alpha
        for given in rest:
            value = given if cap is None or given <= cap else cap
            count += 1
            delta = value - mean
            mean += alpha * delta
            # exponentially weighted variance (West 1979), kept as variance * window
            m2 = keep * (m2 / window + alpha * delta * delta) * window
        self.count, self.mean, self._m2 = count, mean, m2

    def __repr__(self) -> str:
        return f"RunningStats(count={self.count}, mean={self.mean:.3f}, stddev={self.stddev:.3f})"
