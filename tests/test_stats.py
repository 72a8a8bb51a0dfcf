"""The outlier rule and its running statistics, as pure code."""

from __future__ import annotations

import random
import statistics

import pytest

from flamewatch.sampler import OutlierRule, RunningStats


def test_running_stats_match_the_exact_mean_and_variance_within_the_window() -> None:
    values = [random.Random(1).lognormvariate(1, 0.5) for _ in range(500)]
    stats = RunningStats(window=1000)
    for value in values:
        stats.add(value)
    assert stats.count == 500
    assert stats.mean == pytest.approx(statistics.fmean(values))
    assert stats.variance == pytest.approx(statistics.pvariance(values))


def test_running_stats_forget_the_distant_past_after_the_window() -> None:
    stats = RunningStats(window=100)
    for _ in range(1000):
        stats.add(10.0)
    for _ in range(1000):
        stats.add(20.0)
    assert stats.mean == pytest.approx(20.0, rel=1e-3)
    assert stats.stddev < 0.5


def test_adding_a_batch_with_a_cap_equals_adding_each_capped_value() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 1) for _ in range(300)]
    one_by_one, batched = RunningStats(window=100), RunningStats(window=100)
    for value in values:
        one_by_one.add(min(value, 2.5))
    batched.add_all(values[:150], cap=2.5)
    batched.add_all(values[150:], cap=2.5)
    assert (batched.count, batched.mean, batched.variance) == (
        one_by_one.count,
        one_by_one.mean,
        one_by_one.variance,
    )
    assert max(values) > 2.5  # the cap did something
    uncapped = RunningStats(window=100)
    uncapped.add_all(values)
    assert uncapped.mean > batched.mean


def _reference(values: list[float], window: int) -> tuple[int, float, float]:
    """Welford's update, then West's weighted one, value by value, as written in the
    textbooks: what :meth:`RunningStats.add_all` must give, to the last bit."""
    count, mean, m2 = 0, 0.0, 0.0
    alpha = 1.0 / window
    for value in values:
        count += 1
        delta = value - mean
        if count <= window:
            mean += delta / count
            m2 += delta * (value - mean)
        else:
            mean += alpha * delta
            m2 = (1.0 - alpha) * (m2 / window + alpha * delta * delta) * window
    return count, mean, m2 / min(count, window)


@pytest.mark.parametrize("batch", [1, 7, 64, 250], ids=lambda n: f"batches-of-{n}")
def test_batches_crossing_the_window_give_the_same_floats_as_one_by_one(batch: int) -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(1, 0.7) for _ in range(500)]
    stats = RunningStats(window=100)
    for start in range(0, len(values), batch):
        stats.add_all(values[start : start + batch])
    assert (stats.count, stats.mean, stats.variance) == _reference(values, 100)


def test_seeded_stats_continue_like_the_original() -> None:
    rng = random.Random(2)
    values = [rng.gauss(50, 5) for _ in range(200)]
    original = RunningStats(window=1000)
    for value in values:
        original.add(value)
    seeded = RunningStats.seed(original.count, original.mean, original.variance, window=1000)
    for stats in (original, seeded):
        stats.add(55.0)
    assert seeded.mean == pytest.approx(original.mean)
    assert seeded.variance == pytest.approx(original.variance)


def test_no_threshold_during_warmup() -> None:
    rule = OutlierRule(warmup=30)
    stats = RunningStats()
    for _ in range(29):
        stats.add(10.0)
    assert rule.threshold_ms(stats) is None
    stats.add(10.0)
    assert rule.threshold_ms(stats) is not None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([10.0, 10.0] * 15, 20.0, id="no-spread-floor-is-factor-times-mean"),
        pytest.param([1.0, 1.0] * 15, 5.0, id="fast-endpoint-floor-is-min-ms"),
        pytest.param([10.0, 30.0] * 15, 20.0 + 3 * 10.0, id="spread-gives-mean-plus-k-sigma"),
    ],
)
def test_threshold_is_the_largest_of_the_three_bounds(values: list[float], expected: float) -> None:
    rule = OutlierRule(k=3, factor=2, min_ms=5, warmup=30)
    stats = RunningStats()
    for value in values:
        stats.add(value)
    assert rule.threshold_ms(stats) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": -1},
        {"factor": 0.5},
        {"min_ms": float("nan")},
        {"warmup": 31},
        {"warmup": 1},
        {"warmup": 30, "window": 10},
    ],
    ids=str,
)
def test_rule_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_")[0]):
        OutlierRule(**kwargs)  # type: ignore[arg-type]
