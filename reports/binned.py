"""The report's order statistics read from latency histograms instead of raw durations.

The store keeps, per endpoint, version and group, a count per log bucket
(:mod:`flamewatch.sampler.histogram`: DDSketch's mapping, every duration within 1 % of its
bucket's value). Everything a box plot or a version comparison needs is read from those counts,
so its cost grows with the number of buckets (a few dozen per endpoint), never with requests:

- **Quantiles** (q1, median, q3, p90, p99 and the median's confidence bounds) are the
  nearest-rank ones the report always used: the value at the 1-based rank ``ceil(q n)``. The
  bucket holding that rank holds the exact order statistic, so its value is within 1 % of it.
- **Minimum and maximum** are the values of the lowest and the highest bucket (within 1 %).
- **Whiskers** (Tukey's fences) are the lowest bucket value at or above ``q1 - 1.5 IQR`` and the
  highest at or below ``q3 + 1.5 IQR``, the IQR taken from the binned quartiles.
- **The mean** is the exact sum of the durations over their count where the store keeps the sum
  (per endpoint and version), else the count-weighted mean of the bucket values (within 1 %).
- **The Mann-Whitney rank test** ranks buckets, not durations: the durations of one bucket are
  ties, and each gets the bucket's midrank in the pooled sample (the ranks below it plus half of
  its own count). The new sample's rank sum is the sum of its counts times their midranks, and
  the tie term ``sum(t^3 - t)`` over the pooled counts ``t`` of each bucket corrects the
  variance, as for any ties (:func:`~.stats_tests.mann_whitney_p`). Two durations within 2 % of
  each other may share a bucket, so the test sees slightly less than the exact one: a change far
  smaller than the bucket width is not seen at all, which is below any relevance threshold the
  report uses (20 % by default).
- **The median's 95 % interval** runs between the order statistics at the ranks of
  :func:`~.stats_tests.median_ci_ranks`, each read from its bucket like any quantile.

The rank test and the median's interval are computed by :mod:`.change_tests`, which the report
and the findings share.

Pure code over histograms: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

from flamewatch.sampler.histogram import BUCKET_VALUES, Histogram, bucket_value

from .model import Box
from .stats_tests import QUANTILES, nearest_rank

__all__ = ["box_of", "merged", "values_at"]


def merged(histograms: Iterable[Histogram]) -> Histogram:
    """One histogram of the durations of all ``histograms``."""
    result = Histogram()
    for histogram in histograms:
        result.merge(histogram)
    return result


def values_at(histogram: Histogram, ranks: Iterable[int]) -> dict[int, float]:
    """The (bucket) value at each 1-based rank (each within ``[1, total]``), found by binary
    search of the running counts."""
    keys, cumulative = histogram.ranked()
    return {rank: bucket_value(keys[bisect_left(cumulative, rank)]) for rank in set(ranks)}


def box_of(histogram: Histogram, sum_ms: float | None = None) -> Box:
    """The box of a non-empty histogram; its mean is ``sum_ms / count`` when the exact sum of
    the durations is known, else the mean of the bucket values."""
    n = histogram.total
    if not n:
        raise ValueError("an empty histogram has no box")
    ranks = {name: nearest_rank(q, n) for name, q in QUANTILES.items()}
    at = values_at(histogram, ranks.values())
    q1, q3 = at[ranks["q1"]], at[ranks["q3"]]
    spread = 1.5 * (q3 - q1)
    # bucket values rise with the bucket: the fences are found by binary search (q1 and q3
    # are values themselves, so each search finds one)
    values = list(map(BUCKET_VALUES.__getitem__, histogram.ranked()[0]))
    lower = values[bisect_left(values, q1 - spread)]
    upper = values[bisect_right(values, q3 + spread) - 1]
    return Box(
        count=n,
        mean=histogram.mean() if sum_ms is None else sum_ms / n,
        minimum=values[0],
        q1=q1,
        median=at[ranks["median"]],
        q3=q3,
        maximum=values[-1],
        lower_fence=lower,
        upper_fence=upper,
        p90=at[ranks["p90"]],
        p99=at[ranks["p99"]],
    )
