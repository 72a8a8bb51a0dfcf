"""The tests behind the findings, over latency histograms: pure functions over numbers.

A finding compares two sets of durations, each held as a
:class:`~flamewatch.sampler.histogram.Histogram` (a count per log bucket, every duration within
1 % of its bucket's value): an endpoint in two versions, one user's durations against the other
users', the hours of a version before and after a point in time. Three tests serve them:

- **A change of the median** (:func:`compare`): the ratio of the medians with a 95 % interval
  (from the medians' distribution-free intervals), a Mann-Whitney test and the report's verdict
  rule (:func:`~.stats_tests.verdict`). Durations in one bucket are ties, ranked at the bucket's
  midrank, which the tie-corrected variance accounts for.
- **A group that changed differently from the rest** (:func:`interaction`): the question is not
  "did this user's requests get slower?" -- when everyone's did, so did theirs -- but "did they
  change in a way everyone else's did not?". A change shared by all is either the same
  multiple of everyone's median (a slower algorithm) or the same milliseconds added (a slower
  call made once per request); a user's change is its own only when it is neither. So the
  difference of the changes is tested on both scales: the log of the ratio of the two ratios
  of medians, and the difference of the two changes of the median in ms, each as a z-score
  whose standard error comes from the four medians' distribution-free 95 % intervals
  (McKean and Schrader's estimate: the interval's width over 2 x 1.96). The p-value is the
  larger of the two (an intersection-union test: both must reject). Medians keep it robust
  to heavy tails. (A rank statistic of the group against the others, ``P(group's > other's)``,
  was tried first: it saturates near 1, so a user who was already slower than the others
  could not show a further change.)
- **Two sides of a point in time**: the same :func:`compare`, and :func:`mann_whitney_values`
  on the hourly medians themselves, so that hours, not requests, are the units of evidence.

No I/O, no clock: each function is checked on its own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from flamewatch.sampler.histogram import GAMMA, Histogram

from .model import Change
from .stats_tests import mann_whitney_p, median_ci_ranks, ratio, verdict

__all__ = [
    "Interaction",
    "compare",
    "interaction",
    "mann_whitney_values",
    "median",
    "median_bounds",
    "merged",
    "rank_sum",
    "without",
]

_MEDIAN = (1, 2)
_Z95 = 1.959964
#: the smallest standard error of a log median: half the width of a histogram's bucket
_SE_FLOOR = math.log(GAMMA) / 2


def merged(histograms: Sequence[Histogram]) -> Histogram:
    """One histogram of the durations of all ``histograms``."""
    result = Histogram()
    for histogram in histograms:
        result.merge(histogram)
    return result


def without(whole: Histogram, part: Histogram) -> Histogram:
    """The durations of ``whole`` that are not ``part``'s (``part`` must be a part of it)."""
    counts = dict(whole.counts)
    for bucket, count in part.counts.items():
        left = counts.get(bucket, 0) - count
        if left < 0:
            raise ValueError("the part holds durations the whole does not")
        counts[bucket] = left
    return Histogram({b: c for b, c in counts.items() if c})


def median(histogram: Histogram) -> float:
    return histogram.quantile(_MEDIAN)


def median_bounds(histogram: Histogram) -> tuple[float, float]:
    """The 95 % interval of the median: the values at :func:`~.stats_tests.median_ci_ranks`."""
    low, high = median_ci_ranks(histogram.total)
    return histogram.value_at_rank(low), histogram.value_at_rank(high)


def rank_sum(old: Histogram, new: Histogram) -> tuple[float, int]:
    """The new sample's rank sum in the pooled sample (each bucket's durations at its midrank)
    and the tie term ``sum(t**3 - t)`` over the pooled bucket counts."""
    # Histogram.midranks written out: two thirds of the time of a version comparison was
    # the generator's at 10^7 requests
    total, ties, below = 0.0, 0, 0
    counts, others = new.counts, old.counts
    for bucket in sorted(counts.keys() | others.keys()):
        mine = counts.get(bucket, 0)
        tied = mine + others.get(bucket, 0)
        total += mine * (below + (tied + 1) / 2)
        ties += tied * tied * tied - tied
        below += tied
    return total, ties


def compare(
    endpoint: str,
    previous: str,
    version: str,
    before: Histogram,
    after: Histogram,
    *,
    threshold: float,
    alpha: float,
) -> Change:
    """How the durations changed from ``before`` to ``after`` (both non-empty): the ratio of
    the medians with its 95 % interval, the Mann-Whitney p-value, and the verdict."""
    (old_low, old_high), (new_low, new_high) = median_bounds(before), median_bounds(after)
    low, high = ratio(new_low, old_high), ratio(new_high, old_low)
    change = ratio(median(after), median(before))
    p_value = mann_whitney_p(after.total, before.total, *rank_sum(before, after))
    return Change(
        endpoint=endpoint,
        version=version,
        previous=previous,
        ratio=change,
        ratio_low=low,
        ratio_high=high,
        p_value=p_value,
        count=after.total,
        previous_count=before.total,
        verdict=verdict(change, low, high, p_value, threshold, alpha),
    )


def _median_spread(histogram: Histogram) -> tuple[float, float, float]:
    """A median and its standard errors on the log and the ms scale, from the width of its
    distribution-free 95 % interval (McKean and Schrader, 1984), never below half a bucket."""
    middle = median(histogram)
    low, high = median_bounds(histogram)
    se_log = max(math.log(high / low) / (2 * _Z95), _SE_FLOOR)
    return middle, se_log, max((high - low) / (2 * _Z95), middle * _SE_FLOOR)


@dataclass(frozen=True)
class Interaction:
    """How one group's change between two versions differs from everyone else's."""

    relative_ratio: float  # the group's ratio of medians over the others'
    extra_ms: float  # the group's change of the median (ms) less the others'
    p_ratio: float  # two-sided, of the relative ratio being 1
    p_ms: float  # two-sided, of the extra milliseconds being 0

    @property
    def p_value(self) -> float:
        """The intersection-union test of both: the change is the others' on neither scale."""
        return max(self.p_ratio, self.p_ms)


def interaction(
    group_before: Histogram, rest_before: Histogram, group_after: Histogram, rest_after: Histogram
) -> Interaction:
    """The test of a group that changed differently from the rest (see the module's text);
    every histogram must be non-empty."""
    gb, gb_log, gb_ms = _median_spread(group_before)
    ga, ga_log, ga_ms = _median_spread(group_after)
    rb, rb_log, rb_ms = _median_spread(rest_before)
    ra, ra_log, ra_ms = _median_spread(rest_after)
    log_gap = math.log(ga / gb) - math.log(ra / rb)
    ms_gap = (ga - gb) - (ra - rb)
    p_ratio = _two_sided(log_gap / math.sqrt(gb_log**2 + ga_log**2 + rb_log**2 + ra_log**2))
    p_ms = _two_sided(ms_gap / math.sqrt(gb_ms**2 + ga_ms**2 + rb_ms**2 + ra_ms**2))
    return Interaction(math.exp(log_gap), ms_gap, p_ratio, p_ms)


def _two_sided(z: float) -> float:
    return min(1.0, math.erfc(abs(z) / math.sqrt(2)))


def mann_whitney_values(before: Sequence[float], after: Sequence[float]) -> float:
    """Two-sided Mann-Whitney p-value of two small samples of plain values (hourly medians):
    the exact distribution when no value is tied and each side has at most 20, else the normal
    approximation with the tie correction."""
    m, n = len(before), len(after)
    if not m or not n:
        return 1.0
    pooled = Counter((*before, *after))
    u = sum(1.0 if b < a else 0.5 if b == a else 0.0 for a in after for b in before)
    if max(pooled.values()) == 1 and max(m, n) <= 20:
        return _exact_p(u, n, m)
    tie_term = sum(c * c * c - c for c in pooled.values())
    return mann_whitney_p(n, m, u + n * (n + 1) / 2, tie_term)


def _exact_p(u: float, n_after: int, n_before: int) -> float:
    """Two-sided exact p of U (pairs where the after value is the larger), without ties."""
    counts = _u_counts(n_after, n_before)
    mean = n_after * n_before / 2
    distance = abs(u - mean)
    extreme = sum(c for k, c in enumerate(counts) if abs(k - mean) >= distance - 1e-9)
    return min(1.0, extreme / sum(counts))


@cache
def _u_counts(a: int, b: int) -> tuple[int, ...]:
    """How many orderings of ``a`` after-values and ``b`` before-values give each U in
    ``0..a b``: the largest value is an after-value (above all ``b``: U grows by ``b``) or a
    before-value (U unchanged)."""
    if a == 0 or b == 0:
        return (1,)
    largest_after = (0,) * b + _u_counts(a - 1, b)
    largest_before = _u_counts(a, b - 1)
    return tuple(
        (largest_after[k] if k < len(largest_after) else 0)
        + (largest_before[k] if k < len(largest_before) else 0)
        for k in range(a * b + 1)
    )
