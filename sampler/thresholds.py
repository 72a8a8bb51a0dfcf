"""The writer's thresholds: each endpoint's normal response time, learned as its requests pass,
and the outlier threshold published from it to the request threads.

The request threads only read :attr:`Recorder.thresholds_ns` (one dict lookup per request); the
statistics behind it live here, on the writer thread, fed once per drain with the durations
gathered for each endpoint. Seeding from the store (:func:`seed_statistics`) puts a threshold in
force from a process's first request after a restart or a deploy.
"""

from __future__ import annotations

from collections.abc import Mapping

from .recorder import Recorder
from .stats import OutlierRule, RunningStats
from .store import Baseline

__all__ = ["Thresholds", "seed_statistics", "thresholds_ns"]


def seed_statistics(
    baselines: Mapping[str, Baseline], rule: OutlierRule
) -> dict[str, RunningStats]:
    """Each endpoint's statistics to start from, read back from the store.

    A version that ran before (a restart) goes on from its own recent requests. A new version
    of an endpoint starts from the previous version's as a *prior* weighing ``rule.warmup``
    requests: in force from the first request of a deploy (deploys are when regressions
    happen), and outweighed by the version's own requests as they come -- after ``n`` of them
    the prior weighs ``warmup / (warmup + n)``. A new endpoint has no prior and warms up.
    """
    seeded = {}
    for endpoint, baseline in baselines.items():
        samples = baseline.samples
        if baseline.prior_version is not None:
            samples = min(samples, rule.warmup)
        seeded[endpoint] = RunningStats.seed(
            samples, baseline.mean_ms, baseline.variance, rule.window
        )
    return seeded


def thresholds_ns(stats: Mapping[str, RunningStats], rule: OutlierRule) -> dict[str, int]:
    """Each endpoint's outlier threshold in ns, for the endpoints past their warm-up."""
    found = {}
    for endpoint, endpoint_stats in stats.items():
        threshold = rule.threshold_ms(endpoint_stats)
        if threshold is not None:
            found[endpoint] = int(threshold * 1e6)
    return found


class Thresholds:
    """Each endpoint's running statistics, and the thresholds they publish to a recorder."""

    def __init__(
        self,
        rule: OutlierRule,
        recorder: Recorder,
        stats: Mapping[str, RunningStats] | None = None,
    ) -> None:
        self.rule = rule
        self.recorder = recorder
        #: endpoint -> its running statistics (``stats``: seeded before the thread started)
        self.stats: dict[str, RunningStats] = dict(stats or {})

    def update(self, durations: Mapping[str, list[float]]) -> None:
        """Feed each endpoint's new durations to its statistics; publish its threshold."""
        rule, stats, published = self.rule, self.stats, self.recorder.thresholds_ns
        for endpoint, values in durations.items():
            endpoint_stats = stats.get(endpoint)
            if endpoint_stats is None:
                endpoint_stats = stats[endpoint] = RunningStats(rule.window)
            # winsorized at the threshold in force: a burst of slow requests cannot raise the
            # bar it is measured against
            endpoint_stats.add_all(values, cap=rule.threshold_ms(endpoint_stats))
            threshold = rule.threshold_ms(endpoint_stats)
            if threshold is not None:
                published[endpoint] = int(threshold * 1e6)

    def seed(self, baselines: Mapping[str, Baseline]) -> None:
        """Start the endpoints not known yet from what the store holds (a threshold already
        published, by a seed before the thread started or by a warm-up here, is kept)."""
        seeded = {
            endpoint: stats
            for endpoint, stats in seed_statistics(baselines, self.rule).items()
            if endpoint not in self.stats
        }
        self.stats.update(seeded)
        for endpoint, threshold_ns in thresholds_ns(seeded, self.rule).items():
            self.recorder.thresholds_ns.setdefault(endpoint, threshold_ns)
