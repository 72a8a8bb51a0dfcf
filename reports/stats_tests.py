"""The statistics behind the report's version comparisons, as pure functions over numbers.

:mod:`.aggregate` ranks and counts in the database; what comes back is a handful of numbers
per endpoint and version (counts, a few order statistics, rank sums). This module turns them
into nearest-rank quantile ranks, a distribution-free confidence interval of a median, a
Mann-Whitney p-value and a verdict -- free of I/O, so each piece is checked on its own.

Quantiles are nearest-rank: the value at the 1-based rank ``ceil(q * n)``, clamped to
``[1, n]``, with ``q`` an exact fraction so that ``ceil`` never suffers from float noise (and
so SQL can compute the same rank with integer division).
"""

from __future__ import annotations

import math

from .model import Verdict

__all__ = [
    "QUANTILES",
    "mann_whitney_p",
    "median_ci_ranks",
    "nearest_rank",
    "ratio",
    "verdict",
]

#: the quantiles a box needs, as exact fractions (numerator, denominator)
QUANTILES: dict[str, tuple[int, int]] = {
    "p01": (1, 100),
    "p10": (1, 10),
    "q1": (1, 4),
    "median": (1, 2),
    "q3": (3, 4),
    "p90": (9, 10),
    "p99": (99, 100),
}


def nearest_rank(q: tuple[int, int], n: int) -> int:
    """The 1-based rank of the nearest-rank quantile ``q = a/b`` of ``n`` values: ceil(q n)."""
    a, b = q
    return min(max((a * n + b - 1) // b, 1), n)


# A distribution-free 95 % confidence interval of a median, from order statistics: the number
# of values below the median is Binomial(n, 1/2), approximately normal with mean n/2 and
# standard deviation sqrt(n)/2, so the interval runs from the value at rank
#     lower = floor(n/2 - 1.96 sqrt(n)/2)
# to the value at rank
#     upper = ceil(n/2 + 1.96 sqrt(n)/2) + 1
# (both clamped to [1, n]; floor/ceil and the + 1 make it slightly conservative). 1.96 is
# taken as exactly 49/25 and everything is decided in integer arithmetic -- "r <= n/2 -
# 49 sqrt(n)/50" is "50 r <= 25 n and (25 n - 50 r)^2 >= 2401 n" -- so the database finds the
# same ranks without a square root (SQLite has none in every build).


def _lower_ok(n: int, r: int) -> bool:
    """r <= n/2 - 1.96 sqrt(n)/2, exactly."""
    gap = 25 * n - 50 * r
    return gap >= 0 and gap * gap >= 2401 * n


def _upper_ok(n: int, h: int) -> bool:
    """h >= n/2 + 1.96 sqrt(n)/2, exactly."""
    gap = 50 * h - 25 * n
    return gap >= 0 and gap * gap >= 2401 * n


def _unclamped_ci_ranks(n: int) -> tuple[int, int]:
    half_width = 0.98 * math.sqrt(n)
    lower = math.floor(n / 2 - half_width)  # a float estimate, then made exact
    while _lower_ok(n, lower + 1):
        lower += 1
    while not _lower_ok(n, lower):
        lower -= 1
    upper = math.ceil(n / 2 + half_width)
    while _upper_ok(n, upper - 1):
        upper -= 1
    while not _upper_ok(n, upper):
        upper += 1
    return lower, upper + 1


def median_ci_ranks(n: int) -> tuple[int, int]:
    """1-based ranks of the order statistics bounding the median's 95 % interval (see above)."""
    lower, upper = _unclamped_ci_ranks(n)
    return min(max(lower, 1), n), min(max(upper, 1), n)


def mann_whitney_p(n_new: int, n_old: int, rank_sum_new: float, tie_term: int) -> float:
    """Two-sided p-value of the Mann-Whitney U test from the new sample's rank sum.

    ``rank_sum_new`` sums the new values' ranks in the pooled sample (ties get their average
    rank); ``tie_term`` is the sum of ``t**3 - t`` over the groups of ``t`` tied values. Uses
    the normal approximation with the tie-corrected variance and a continuity correction of
    1/2 (as ``scipy.stats.mannwhitneyu(method="asymptotic")`` does by default).
    """
    big_n = n_new + n_old
    if n_new == 0 or n_old == 0 or big_n < 2:
        return 1.0
    u = rank_sum_new - n_new * (n_new + 1) / 2
    mean = n_new * n_old / 2
    variance = n_new * n_old / 12 * ((big_n + 1) - tie_term / (big_n * (big_n - 1)))
    if variance <= 0:  # every value tied: no evidence either way
        return 1.0
    z = max(abs(u - mean) - 0.5, 0.0) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` for durations, where a zero denominator gives infinity
    (or 1 when both are zero) instead of an error."""
    if denominator > 0:
        return numerator / denominator
    return 1.0 if numerator <= 0 else math.inf


def verdict(
    change: float, low: float, high: float, p_value: float, threshold: float, alpha: float
) -> Verdict:
    """What a ratio of medians with its interval and p-value says, for a relevance threshold.

    ``slower``/``faster``: the change is at least the threshold, its whole interval is on one
    side of 1, and the test is significant at ``alpha``. ``unchanged``: the interval lies
    within ``[1/(1 + threshold), 1 + threshold]``, so any change is below relevance.
    ``uncertain``: neither -- too few requests or too much noise to tell.
    """
    up, down = 1 + threshold, 1 / (1 + threshold)
    if change >= up and low > 1 and p_value < alpha:
        return "slower"
    if change <= down and high < 1 and p_value < alpha:
        return "faster"
    if down <= low and high <= up:
        return "unchanged"
    return "uncertain"
