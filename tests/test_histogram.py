"""The latency histogram: every quantile within 1 % of the exact one, merges by adding."""

from __future__ import annotations

import math
import random

import pytest

from flamewatch.reports.stats_tests import QUANTILES, nearest_rank
from flamewatch.sampler.histogram import (
    ALPHA,
    BUCKET_VALUES,
    GAMMA,
    MIN_MS,
    Histogram,
    bucket_of,
    bucket_value,
)


def _exact(values: list[float], q: tuple[int, int]) -> float:
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormvariate(1.0, 1.5),
        lambda rng: rng.expovariate(1 / 30),
        lambda rng: rng.uniform(0.0005, 5.0),
        lambda rng: 2.0 if rng.random() < 0.99 else 40.0 * rng.random(),
        lambda rng: rng.paretovariate(1.2) * 0.01,
    ],
    ids=["lognormal", "exponential", "uniform-from-below-1us", "bimodal-tail", "pareto"],
)
def test_every_quantile_is_within_alpha_of_the_exact_one(draw: object) -> None:
    rng = random.Random(7)
    values = [draw(rng) for _ in range(20_000)]  # type: ignore[operator]
    histogram = Histogram.of(values)
    assert len(histogram) == len(values)
    for name, q in QUANTILES.items():
        exact = max(_exact(values, q), MIN_MS)
        assert abs(histogram.quantile(q) - exact) <= ALPHA * exact * (1 + 1e-9), name


def test_a_bucket_stands_for_every_value_in_it() -> None:
    for bucket in range(bucket_of(MIN_MS), bucket_of(3_600_000.0) + 1, 37):
        low, high = GAMMA ** (bucket - 1), GAMMA**bucket
        value = bucket_value(bucket)
        for x in (low * (1 + 1e-12), math.sqrt(low * high), high):
            assert bucket_of(x) == bucket or math.isclose(x, low) or math.isclose(x, high)
            assert abs(value - x) <= ALPHA * x * (1 + 1e-9)


def test_about_1100_buckets_cover_a_microsecond_to_an_hour() -> None:
    assert 1000 <= bucket_of(3_600_000.0) - bucket_of(MIN_MS) <= 1200


def test_merging_is_adding_and_order_does_not_matter() -> None:
    rng = random.Random(3)
    parts = [[rng.lognormvariate(0, 1) for _ in range(500)] for _ in range(4)]
    merged = Histogram()
    for part in reversed(parts):
        merged.merge(Histogram.of(part))
    whole = Histogram.of(v for part in parts for v in part)
    assert merged.counts == whole.counts
    assert merged.total == whole.total == 2000
    from_rows = Histogram()
    from_rows.merge_counts(sorted(whole.counts.items()))  # as SQL rows come back
    assert from_rows.quantile((1, 2)) == whole.quantile((1, 2))


def test_midranks_tie_values_of_one_bucket() -> None:
    a = Histogram.of([1.0, 1.0, 5.0])
    b = Histogram.of([1.0, 9.0])
    rows = list(a.midranks(b))
    assert [(mine, theirs) for _, mine, theirs, _ in rows] == [(2, 1), (1, 0), (0, 1)]
    assert [rank for *_, rank in rows] == [2.0, 4.0, 5.0]


def test_an_empty_histogram_says_so() -> None:
    with pytest.raises(ValueError, match="empty"):
        Histogram().quantile((1, 2))
    assert not Histogram()
    assert bucket_of(0.0) == bucket_of(-1.0) == bucket_of(float("nan")) == bucket_of(MIN_MS)


def _compact(histogram: Histogram) -> Histogram:
    pairs = sorted(histogram.counts.items())
    return Histogram.from_sorted([b for b, _ in pairs], [c for _, c in pairs])


def test_the_compact_form_answers_as_the_dict_form_does() -> None:
    rng = random.Random(5)
    whole = Histogram.of(rng.lognormvariate(1.0, 1.2) for _ in range(3000))
    compact = _compact(whole)
    assert compact.total == whole.total == 3000
    assert compact.counts == whole.counts
    assert list(compact.counts) == sorted(whole.counts)  # ascending: the mean's order
    assert compact.buckets() == whole.buckets()
    for q in QUANTILES.values():
        assert compact.quantile(q) == whole.quantile(q)
    for rank in (1, 2, 1499, 1500, 1501, 2999, 3000):
        assert compact.value_at_rank(rank) == whole.value_at_rank(rank)
    other = Histogram.of(rng.lognormvariate(1.1, 1.0) for _ in range(500))
    assert list(compact.midranks(other)) == list(whole.midranks(other))
    assert compact.mean() == Histogram.from_counts(dict(sorted(whole.counts.items()))).mean()


def test_a_compact_histogram_changed_is_unpacked_for_good() -> None:
    base = Histogram.of([1.0, 2.0, 2.0, 50.0])
    compact = _compact(base)
    compact.add(2.0)
    compact.merge(Histogram.of([50.0, 700.0]))
    assert compact.total == 7
    assert compact.counts == Histogram.of([1.0, 2.0, 2.0, 2.0, 50.0, 50.0, 700.0]).counts
    assert compact.quantile((1, 2)) == bucket_value(bucket_of(2.0))
    assert compact.quantile((99, 100)) == bucket_value(bucket_of(700.0))
    # merging a compact histogram into another leaves it as it was
    into = Histogram()
    into.merge(_compact(base))
    assert into.counts == base.counts
    empty = Histogram.from_sorted([], [])
    assert not empty
    assert empty.counts == {}
    with pytest.raises(ValueError, match="as many counts as buckets"):
        Histogram.from_sorted([1, 2], [3])


def test_bucket_values_are_the_formula_inside_the_table_and_beyond_it() -> None:
    for bucket in (bucket_of(MIN_MS), -1, 0, 1, 400, bucket_of(86_400_000.0)):
        assert bucket in BUCKET_VALUES
        assert bucket_value(bucket) == 2.0 * GAMMA**bucket / (GAMMA + 1.0)
    beyond = bucket_of(86_400_000.0) + 50  # a request of two days: worked out, not kept
    assert BUCKET_VALUES[beyond] == 2.0 * GAMMA**beyond / (GAMMA + 1.0)
    assert beyond not in BUCKET_VALUES
    assert Histogram.of([1e9, 1e9]).quantile((1, 2)) == pytest.approx(1e9, rel=ALPHA)
