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
   single slow hour is not a change. The p-value given is the larger of the two. The
   requests' comparison can only be a change if their medians moved past the relevance
   threshold, so that is asked first, of medians found without merging the buckets
   (:class:`SeriesMedians`): the few splits that pass are merged and tested in full.

A slow drift moves the two sides' medians by a fraction of the drift, below the relevance
threshold unless the drift itself is that large. Pure code over histograms.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flamewatch.sampler.histogram import Histogram, bucket_value

from .change_tests import compare, mann_whitney_values, merged
from .model import Change
from .stats_tests import ratio

__all__ = [
    "MIN_BUCKET_REQUESTS",
    "MIN_SIDE_BUCKETS",
    "SeriesMedians",
    "TimeChange",
    "find_time_changes",
]

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


class SeriesMedians:
    """The median of any run of consecutive histograms of a series, without merging them.

    The search tests up to seven splits of a series of up to 180 days, and each test merged
    both sides anew: at 10^7 requests half the time of the findings, for splits that mostly
    fail at their first condition, medians that moved by the relevance threshold. The median
    of a run is found instead by binary search over bucket ids: the smallest bucket ``v``
    where the run's count of durations at or below ``v`` (a sum over its histograms, each a
    binary search of its own running counts) reaches the median's rank. That is the bucket
    holding the rank, the very bucket the merged histogram's median is read from. It lies
    between the lowest and the highest of the histograms' own medians (at the highest, each
    histogram counts at least half of its durations, rounded up; below the lowest, each
    fewer), which bounds the search to a few steps.
    """

    __slots__ = ("_ranked", "medians")

    def __init__(self, histograms: Sequence[Histogram]) -> None:
        self._ranked = [h.ranked() for h in histograms]
        #: each histogram's median bucket
        self.medians = [
            keys[bisect_left(cumulative, (cumulative[-1] + 1) // 2)]
            for keys, cumulative in self._ranked
        ]

    def median(self, lo: int, hi: int) -> float:
        """The median of histograms ``lo`` to ``hi - 1`` (none of them empty): the value
        :func:`~.change_tests.median` gives of them merged, the same float."""
        run = self._ranked[lo:hi]
        rank = (sum(cumulative[-1] for _, cumulative in run) + 1) // 2  # ceil(n / 2)
        low, high = min(self.medians[lo:hi]), max(self.medians[lo:hi])
        while low < high:
            middle = (low + high) // 2
            seen = 0
            for keys, cumulative in run:
                below = bisect_right(keys, middle)
                if below:
                    seen += cumulative[below - 1]
            if seen >= rank:
                high = middle
            else:
                low = middle + 1
        return bucket_value(low)


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
    medians = SeriesMedians([h for _, h in usable])
    logs = [math.log(max(bucket_value(bucket), 1e-6)) for bucket in medians.medians]

    results: dict[tuple[int, int, int], TimeChange | None] = {}

    def _test(lo: int, k: int, hi: int) -> TimeChange | None:
        # a split passed in the search is tested again between its neighbours, often the
        # same three bounds: each is tested once, each side merged once
        if (lo, k, hi) not in results:
            results[(lo, k, hi)] = _tested(lo, k, hi)
        return results[(lo, k, hi)]

    up, down = 1 + threshold, 1 / (1 + threshold)

    def _tested(lo: int, k: int, hi: int) -> TimeChange | None:
        # compare's verdict is a change only if the medians moved by the threshold: most
        # splits are decided by two medians found without merging a histogram
        if down < ratio(medians.median(k, hi), medians.median(lo, k)) < up:
            return None
        buckets_p = mann_whitney_values(logs[lo:k], logs[k:hi])
        if buckets_p >= alpha:
            return None
        before = merged([h for _, h in usable[lo:k]])
        after = merged([h for _, h in usable[k:hi]])
        change = compare(
            endpoint, version, version, before, after, threshold=threshold, alpha=alpha
        )
        if change.verdict not in ("slower", "faster"):
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
