"""Mergeable latency histograms: log-spaced buckets with a bound on every quantile's error.

The mapping is DDSketch's (Masson, Rim and Lee, VLDB 2019): with
``gamma = (1 + alpha) / (1 - alpha)``, bucket ``i`` holds the durations in
``(gamma^(i-1), gamma^i]`` ms, and its representative value ``2 gamma^i / (gamma + 1)`` is
within a relative ``alpha`` of every duration in it. So any quantile read from the buckets --
the bucket holding the quantile's rank, by its representative value -- is within ``alpha`` of
the exact quantile of the durations themselves. At ``alpha = 1 %`` the buckets from 1 µs to an
hour number about 1,100; a real endpoint fills a few dozen.

Counts add: the histograms of any processes, hosts and hours merge by summing the counts of
equal buckets, which is what lets them live as SQL rows (``bucket``, ``count``) merged with
``GROUP BY bucket``. A fixed mapping written here is shorter than adapting a sketch library
(``ddsketch`` keeps its own protobuf store and an offset that changes as it grows; a bucket
index that never changes is what a SQL key needs).

Pure code over numbers: no clock, no I/O.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, chain
from operator import ge, mul, sub

__all__ = [
    "ALPHA",
    "BUCKET_VALUES",
    "GAMMA",
    "MIN_MS",
    "Histogram",
    "bucket_of",
    "bucket_value",
]

#: the relative error of every quantile read from a histogram
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
#: durations at or below this (ms) share its bucket: nothing is timed finer than a microsecond
MIN_MS = 0.001
_MIN_BUCKET = math.ceil(math.log(MIN_MS) * _INV_LOG_GAMMA)


def bucket_of(ms: float) -> int:
    """The bucket of a duration in ms: ``ceil(log_gamma ms)``, at least that of :data:`MIN_MS`."""
    if ms <= MIN_MS or math.isnan(ms):
        return _MIN_BUCKET
    return math.ceil(math.log(ms) * _INV_LOG_GAMMA)


def _value(bucket: int) -> float:
    return 2.0 * GAMMA**bucket / (GAMMA + 1.0)


class _BucketValues(dict[int, float]):
    """Bucket -> :func:`bucket_value`, worked out once for the buckets from :data:`MIN_MS` to
    a day (about 1,600): a report reads the value of every bucket of thousands of histograms
    (their means, their boxes), and a lookup in C is a fraction of a call. A bucket beyond
    is worked out when asked, not kept."""

    def __missing__(self, bucket: int) -> float:
        return _value(bucket)


#: bucket -> its value, e.g. ``map(BUCKET_VALUES.__getitem__, buckets)``
BUCKET_VALUES = _BucketValues(
    (bucket, _value(bucket)) for bucket in range(_MIN_BUCKET, bucket_of(86_400_000.0) + 1)
)


def bucket_value(bucket: int) -> float:
    """The duration (ms) a bucket stands for: within ``alpha`` of every duration in it."""
    return BUCKET_VALUES[bucket]


class Histogram:
    """Counts per bucket; quantiles by nearest rank, ranks and merges.

    Quantile ranks are the report's (:func:`flamewatch.reports.stats_tests.nearest_rank`):
    the value at the 1-based rank ``ceil(q n)``, here the representative value of the bucket
    that holds that rank. A single rank walks the buckets in order; for many (a box's seven
    quantiles, the medians of runs of days), :meth:`ranked` works out the buckets in order
    and their running counts once, and every quantile is then a binary search.

    Two forms: a dict of counts (``from_counts``, merges, ``add``), or only the two arrays of
    the buckets in order and their running counts (``from_sorted``), a fifth of the memory,
    for the many histograms that are only asked for ranks (a version's days: 3,800 of them
    at 10^7 requests). The second makes :attr:`counts` anew when asked, without keeping it,
    until the histogram is changed.
    """

    __slots__ = ("_counts", "_cumulative", "_keys", "_sorted", "total")

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self._counts: dict[int, int] | None = {}
        self.total = 0
        self._sorted: list[tuple[int, int]] | None = None
        self._keys: Sequence[int] | None = None
        self._cumulative: Sequence[int] = ()
        if counts:
            self.merge_counts(counts)

    @classmethod
    def from_counts(cls, counts: dict[int, int]) -> Histogram:
        """A histogram that takes ``counts`` (bucket -> positive count) as its own: no copy,
        for the many histograms read from SQL at once."""
        histogram = cls()
        histogram._counts = counts
        histogram.total = sum(counts.values())
        return histogram

    @classmethod
    def from_sorted(cls, buckets: Sequence[int], counts: Sequence[int]) -> Histogram:
        """A histogram of ``buckets`` (ascending, each once) with their positive ``counts``,
        kept in the compact form (see the class's text)."""
        if len(buckets) != len(counts):
            raise ValueError("as many counts as buckets are needed")
        histogram = cls()
        histogram._counts = None
        histogram._keys = array("i", buckets)
        histogram._cumulative = cumulative = array("q", accumulate(counts))
        histogram.total = cumulative[-1] if cumulative else 0
        return histogram

    @classmethod
    def from_lists(cls, buckets: list[int], counts: list[int]) -> Histogram:
        """:meth:`from_sorted` of buckets in any order (as SQLite's ``json_group_array`` may
        give them), put in order if they are not."""
        if any(map(ge, buckets, buckets[1:])):
            pairs = sorted(zip(buckets, counts, strict=True))
            buckets, counts = [b for b, _ in pairs], [c for _, c in pairs]
        return cls.from_sorted(buckets, counts)

    @property
    def counts(self) -> dict[int, int]:
        """Bucket -> count, in ascending order of bucket for the compact form."""
        if self._counts is None:
            return self._unpacked()
        return self._counts

    def _unpacked(self) -> dict[int, int]:
        return dict(_pairs(self._keys or (), self._cumulative))

    def _changed(self) -> dict[int, int]:
        """The counts to change (the compact form's unpacked for good); ranks to work out
        again."""
        if self._counts is None:
            self._counts = self._unpacked()
        self._sorted = self._keys = None
        return self._counts

    @classmethod
    def of(cls, durations_ms: Iterable[float]) -> Histogram:
        histogram = cls()
        for ms in durations_ms:
            histogram.add(ms)
        return histogram

    def add(self, ms: float, count: int = 1) -> None:
        bucket = bucket_of(ms)
        counts = self._changed()
        counts[bucket] = counts.get(bucket, 0) + count
        self.total += count

    def merge_counts(self, counts: Mapping[int, int] | Iterable[tuple[int, int]]) -> None:
        """Add ``bucket -> count`` pairs (another histogram's, or rows read from SQL)."""
        pairs = counts.items() if isinstance(counts, Mapping) else counts
        mine = self._changed()
        get = mine.get
        added = 0
        for bucket, count in pairs:
            if count:
                mine[bucket] = get(bucket, 0) + count
                added += count
        self.total += added

    def merge(self, other: Histogram) -> None:
        self.merge_counts(other.counts)

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return self.total > 0

    def __repr__(self) -> str:
        return f"Histogram(total={self.total}, buckets={len(self.counts)})"

    def buckets(self) -> list[tuple[int, int]]:
        """``(bucket, count)`` in ascending order of duration."""
        if self._sorted is None:
            keys, cumulative = self.ranked()
            self._sorted = list(_pairs(keys, cumulative))
        return self._sorted

    def ranked(self) -> tuple[Sequence[int], Sequence[int]]:
        """The buckets in ascending order and the running count up to each (its last, the
        total): the bucket of a rank is the first whose running count reaches it."""
        if self._keys is None:
            counts = self.counts
            keys = sorted(counts)
            self._cumulative = array("q", accumulate(map(counts.__getitem__, keys)))
            self._keys = array("i", keys)
        return self._keys, self._cumulative

    def value_at_rank(self, rank: int) -> float:
        """The (representative) duration at a 1-based rank, clamped to ``[1, total]``."""
        if not self.total:
            raise ValueError("an empty histogram has no values")
        rank = min(max(rank, 1), self.total)
        counts = self._counts
        if self._keys is None and counts is not None:
            # not ranked yet: walking the sorted buckets is a third of the time of ranking
            # them, and most histograms are asked for one rank or three (their medians,
            # the medians' intervals), 3,600 groups' cells at 10^7 requests
            seen = 0
            for bucket in sorted(counts):
                seen += counts[bucket]
                if seen >= rank:
                    return bucket_value(bucket)
        keys, cumulative = self.ranked()
        return bucket_value(keys[bisect_left(cumulative, rank)])

    def quantile(self, q: tuple[int, int]) -> float:
        """The nearest-rank quantile ``q = a/b`` (an exact fraction), within ``alpha`` of the
        exact one."""
        a, b = q
        return self.value_at_rank((a * self.total + b - 1) // b)

    def mean(self) -> float:
        """The mean of the representative values (within ``alpha`` of the exact mean)."""
        if not self.total:
            raise ValueError("an empty histogram has no mean")
        counts = self.counts
        weighted: float = sum(map(mul, map(BUCKET_VALUES.__getitem__, counts), counts.values()))
        return weighted / self.total

    def midranks(self, other: Histogram) -> Iterator[tuple[int, int, int, float]]:
        """Bucket by bucket over both histograms: ``(bucket, mine, theirs, midrank)``, the
        midrank being the average rank of the bucket's values in the pooled sample (equal
        buckets are ties), for a rank test on binned data."""
        counts, others = self.counts, other.counts
        below = 0
        for bucket in sorted(counts.keys() | others.keys()):
            mine, theirs = counts.get(bucket, 0), others.get(bucket, 0)
            tied = mine + theirs
            yield bucket, mine, theirs, below + (tied + 1) / 2
            below += tied


def _pairs(keys: Sequence[int], cumulative: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(bucket, count) from the buckets and their running counts."""
    return zip(keys, map(sub, cumulative, chain((0,), cumulative)), strict=True)
