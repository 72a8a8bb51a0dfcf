"""Changes inside a version: the medians of runs of days found without merging them, and the
screen that skips a split's full test only when its verdict cannot be a change."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from flamewatch.reports.change_tests import compare, mann_whitney_values, median, merged
from flamewatch.reports.changepoints import (
    MIN_BUCKET_REQUESTS,
    SeriesMedians,
    TimeChange,
    _segment,
    find_time_changes,
)
from flamewatch.reports.stats_tests import ratio
from flamewatch.sampler.histogram import Histogram, bucket_value

DAY = 86_400.0


def _day(rng: random.Random, scale: float, n: int, compact: bool) -> Histogram:
    histogram = Histogram.of(rng.lognormvariate(math.log(scale), 0.6) for _ in range(n))
    if not compact:
        return histogram
    pairs = sorted(histogram.counts.items())
    return Histogram.from_sorted([b for b, _ in pairs], [c for _, c in pairs])


def _series(seed: int, days: int, shift_at: int | None, factor: float) -> list[Histogram]:
    """Days of log-normal durations, ``factor`` times slower from ``shift_at`` on, some of
    them with a handful of requests, one of them a single request repeated."""
    rng = random.Random(seed)
    found = []
    for i in range(days):
        scale = 20.0 * (factor if shift_at is not None and i >= shift_at else 1.0)
        n = rng.choice((5, 8, 40, 200, 600))
        found.append(_day(rng, scale, n, compact=i % 2 == 0))
    found[days // 3] = Histogram.of([33.0] * 9)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_the_median_of_a_run_of_days_is_the_merged_histograms_median(seed: int) -> None:
    days = _series(seed, 24, 12 if seed % 2 else None, 1.0 + seed / 4)
    medians = SeriesMedians(days)
    for i, day in enumerate(days):
        assert bucket_value(medians.medians[i]) == medians.median(i, i + 1) == median(day)
    for lo, hi in itertools.combinations(range(len(days) + 1), 2):
        assert medians.median(lo, hi) == median(merged(days[lo:hi])), (lo, hi)


def test_runs_of_days_that_share_no_bucket() -> None:
    fast = [Histogram.of([1.0] * 7), Histogram.of([1.1] * 5)]
    slow = [Histogram.of([900.0] * 6), Histogram.of([2000.0, 2000.0, 2100.0, 5.0, 5.0])]
    days = fast + slow
    medians = SeriesMedians(days)
    for lo, hi in itertools.combinations(range(len(days) + 1), 2):
        assert medians.median(lo, hi) == median(merged(days[lo:hi]))


@pytest.mark.parametrize("threshold", [0.05, 0.2, 1.0])
def test_no_split_whose_verdict_is_a_change_is_screened_out(threshold: float) -> None:
    """The screen's one condition is a consequence of a change's verdict: a "slower" needs
    the ratio of the medians at least 1 + threshold, a "faster" at most its inverse."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    changes = 0
    for seed in range(40):
        days = _series(seed, 14, 7, 1.0 + (seed % 8) / 5)
        medians = SeriesMedians(days)
        for k in range(2, len(days) - 1):
            change = compare(
                "e", "v", "v", merged(days[:k]), merged(days[k:]), threshold=threshold, alpha=0.01
            )
            moved = ratio(medians.median(k, len(days)), medians.median(0, k))
            if change.verdict in ("slower", "faster"):
                changes += 1
                assert not down < moved < up
    assert changes > 20  # the property was put to the test


def _unscreened(series: list[tuple[float, Histogram]], threshold: float) -> list[TimeChange]:
    """find_time_changes as it was before the screen: every split merged and compared."""
    alpha = 0.01
    usable = [(start, h) for start, h in series if h.total >= MIN_BUCKET_REQUESTS]
    if len(usable) < 12:
        return []
    logs = [math.log(max(median(h), 1e-6)) for _, h in usable]
    results: dict[tuple[int, int, int], TimeChange | None] = {}

    def test(lo: int, k: int, hi: int) -> TimeChange | None:
        if (lo, k, hi) in results:
            return results[(lo, k, hi)]
        before = merged([h for _, h in usable[lo:k]])
        after = merged([h for _, h in usable[k:hi]])
        change = compare("e", "v", "v", before, after, threshold=threshold, alpha=alpha)
        buckets_p = mann_whitney_values(logs[lo:k], logs[k:hi])
        found = None
        if change.verdict in ("slower", "faster") and buckets_p < alpha:
            found = TimeChange(
                usable[k][0],
                usable[lo][0],
                usable[hi - 1][0] + DAY,
                before,
                after,
                change,
                k - lo,
                hi - k,
                buckets_p,
            )
        results[(lo, k, hi)] = found
        return found

    cuts: set[int] = set()
    _segment(logs, 0, len(usable), 0, cuts, lambda lo, k, hi: test(lo, k, hi) is not None)
    bounds = [0, *sorted(cuts), len(usable)]
    return [
        found
        for lo, k, hi in zip(bounds, bounds[1:], bounds[2:], strict=False)
        if (found := test(lo, k, hi)) is not None
    ]


@pytest.mark.parametrize("threshold", [0.1, 0.2])
def test_the_changes_found_are_those_of_every_split_tested_in_full(threshold: float) -> None:
    found_any = 0
    for seed in range(30):
        shift = None if seed % 3 == 0 else 10 + seed % 7
        days = _series(seed, 30, shift, 1.0 + (seed % 5) / 3)
        series = [(1.7e9 + i * DAY, h) for i, h in enumerate(days)]
        got = find_time_changes("e", "v", series, DAY, threshold=threshold, alpha=0.01)
        want = _unscreened(series, threshold)
        assert [(c.at, c.since, c.until, c.change, c.buckets_p) for c in got] == [
            (c.at, c.since, c.until, c.change, c.buckets_p) for c in want
        ]
        for mine, theirs in zip(got, want, strict=True):
            assert mine.before.counts == theirs.before.counts
            assert list(mine.before.counts) == list(theirs.before.counts)  # the means' order
            assert mine.after.mean() == theirs.after.mean()
        found_any += len(got)
    assert found_any >= 10
