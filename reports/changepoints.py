"""Changes inside a version: the points in time where an endpoint's durations moved for good.

Not every slowdown comes with a deploy: the data grows (Flask's tutorial blog lists every post
on its index), a dependency degrades, a cache stops working. Comparing versions cannot see
those; a version's durations over time can. As the regression detectors of Sentry and MongoDB
do, a point is found first and tested after:

1. **The series**: the version's durations in time buckets (an hour each by default), each
   bucket with at least :data:`MIN_BUCKET_REQUESTS` requests summed up by its median (log
   scale). A median per bucket, not per request, so that a minute-long load burst or a 1 %
   tail of very slow requests hardly moves the series.
2. **The point**: binary segmentation with the CUSUM statistic of a shift of the mean,
   ``sqrt(k (n - k) / n) |mean(x[:k]) - mean(x[k:])|``, over the splits leaving at least
   :data:`MIN_SIDE_BUCKETS` buckets on each side; each side is searched again (to depth
   :data:`MAX_DEPTH`) once a split has passed the test.
3. **The test**, on the two sides of each point (between its neighbouring points): the
   requests' medians compared as versions are (:func:`~.change_tests.compare`: ratio with its
   interval, Mann-Whitney, the relevance threshold) *and* the buckets' medians by an exact
   Mann-Whitney test, so that the hours, not only the requests within them, are evidence: a
   single slow hour is not a change. The p-value given is the larger of the two.

A slow drift moves the two sides' medians by a fraction of the drift, below the relevance
threshold unless the drift itself is that large. Pure code over histograms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flamewatch.sampler.histogram import Histogram

from .change_tests import compare, mann_whitney_values, median, merged
from .model import Change

__all__ = ["MIN_BUCKET_REQUESTS", "MIN_SIDE_BUCKETS", "TimeChange", "find_time_changes"]

#: a time bucket with fewer requests has no median worth a point of the series
MIN_BUCKET_REQUESTS = 5
#: the fewest buckets on each side of a change point (an exact two-sided Mann-Whitney test of
#: 6 against 6 values can reach p = 0.002; of 5 against 5, 0.008)
MIN_SIDE_BUCKETS = 6
#: how often each side of a found point is searched again
MAX_DEPTH = 2

Series = Sequence[tuple[float, Histogram]]  # (bucket start, durations), in time order


@dataclass(frozen=True)
class TimeChange:
    """A change of an endpoint's durations inside a version, at a point in time."""

    at: float  # Unix time of the start of the first bucket after the change
    since: float  # start of the first bucket compared before it
    until: float  # end of the last bucket compared after it
    before: Histogram
    after: Histogram
    change: Change  # the requests' medians before and after (version = previous = the version)
    buckets_before: int
    buckets_after: int
    buckets_p: float  # exact Mann-Whitney of the buckets' medians

    @property
    def p_value(self) -> float:
        return max(self.change.p_value, self.buckets_p)


def find_time_changes(
    endpoint: str,
    version: str,
    series: Series,
    bucket_s: float,
    *,
    threshold: float,
    alpha: float,
) -> list[TimeChange]:
    """The change points of one endpoint's version, in time order (see the module's text)."""
    usable = [(start, h) for start, h in series if h.total >= MIN_BUCKET_REQUESTS]
    if len(usable) < 2 * MIN_SIDE_BUCKETS:
        return []
    logs = [math.log(max(median(h), 1e-6)) for _, h in usable]

    results: dict[tuple[int, int, int], TimeChange | None] = {}

    def _test(lo: int, k: int, hi: int) -> TimeChange | None:
        # a split passed in the search is tested again between its neighbours, often the
        # same three bounds: each is tested once, each side merged once
        if (lo, k, hi) not in results:
            results[(lo, k, hi)] = _tested(lo, k, hi)
        return results[(lo, k, hi)]

    def _tested(lo: int, k: int, hi: int) -> TimeChange | None:
        before = merged([h for _, h in usable[lo:k]])
        after = merged([h for _, h in usable[k:hi]])
        change = compare(
            endpoint, version, version, before, after, threshold=threshold, alpha=alpha
        )
        buckets_p = mann_whitney_values(logs[lo:k], logs[k:hi])
        if change.verdict not in ("slower", "faster") or buckets_p >= alpha:
            return None
        return TimeChange(
            at=usable[k][0],
            since=usable[lo][0],
            until=usable[hi - 1][0] + bucket_s,
            before=before,
            after=after,
            change=change,
            buckets_before=k - lo,
            buckets_after=hi - k,
            buckets_p=buckets_p,
        )

    cuts: set[int] = set()
    _segment(logs, 0, len(usable), 0, cuts, lambda lo, k, hi: _test(lo, k, hi) is not None)
    # each point found is tested again between its neighbours, the final segments
    bounds = [0, *sorted(cuts), len(usable)]
    found = []
    for lo, k, hi in zip(bounds, bounds[1:], bounds[2:], strict=False):
        tested = _test(lo, k, hi)
        if tested is not None:
            found.append(tested)
    return found


def _segment(
    logs: Sequence[float],
    lo: int,
    hi: int,
    depth: int,
    cuts: set[int],
    passes: Callable[[int, int, int], bool],
) -> None:
    """Binary segmentation of ``logs[lo:hi]``: the best split, kept if it passes the test,
    then each side in turn."""
    k = _best_split(logs, lo, hi)
    if k is None or not passes(lo, k, hi):
        return
    cuts.add(k)
    if depth < MAX_DEPTH:
        _segment(logs, lo, k, depth + 1, cuts, passes)
        _segment(logs, k, hi, depth + 1, cuts, passes)


def _best_split(logs: Sequence[float], lo: int, hi: int) -> int | None:
    """The split of ``logs[lo:hi]`` with the largest CUSUM statistic of a mean shift."""
    n = hi - lo
    if n < 2 * MIN_SIDE_BUCKETS:
        return None
    total = math.fsum(logs[lo:hi])
    best, best_k = -1.0, None
    left = math.fsum(logs[lo : lo + MIN_SIDE_BUCKETS - 1])
    for k in range(lo + MIN_SIDE_BUCKETS, hi - MIN_SIDE_BUCKETS + 1):
        left += logs[k - 1]
        size = k - lo
        statistic = math.sqrt(size * (n - size) / n) * abs(
            left / size - (total - left) / (n - size)
        )
        if statistic > best:
            best, best_k = statistic, k
    return best_k
