"""The request thread's side of the agent, and what it shares with the sampler and the writer.

A monitored request costs one :data:`~.inflight.Record` (a plain list): the request thread
notes its start in :attr:`Recorder.starts`, builds the record when Flask dispatches the request
and puts it in :attr:`Recorder.inflight` for the stack sampler, and when it ends takes it out,
compares the duration with the threshold it carries and appends it to :attr:`Recorder.queue`
as a tuple. The Flask hooks (``flamewatch.flask_plugin.hooks``) do this inline, where every
call and lookup counts; :meth:`Recorder.end` is the same end step for the rarer ways a request
ends (a streamed body, an exception). The writer thread
drains the queue, keeps the running statistics and publishes fresh thresholds back into
:attr:`Recorder.thresholds_ns`; nothing here blocks or does I/O.

Only the writer's cadence would leave an endpoint without a threshold for up to a
``flush_interval`` after its warm-up -- a burst of quick requests followed at once by a slow one
would go unflagged. So a request that ended without a threshold (one of an endpoint's first
``warmup`` requests in this process, unless the store gave a prior) feeds
:meth:`Recorder.warm_up` on its own thread: the request that completes the warm-up publishes the
endpoint's first threshold, and the very next request is measured against it. A request with a
threshold never comes here, so the steady state costs nothing more.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .inflight import (
    DURATION,
    ENDPOINT,
    OUTLIER,
    REQUEST,
    SAMPLING,
    T0,
    THREAD,
    THRESHOLD,
    Queued,
    Record,
)
from .stack_sampler import StackSampler
from .stats import OutlierRule, RunningStats

__all__ = ["FlushMarker", "Recorder"]


class FlushMarker:
    """Put in the queue by :meth:`Recorder.flush_marker`; answered once everything queued
    before it is written (``ok=True``) or known not to be writable now (``ok=False``)."""

    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False

    def answer(self, ok: bool) -> None:
        self.ok = ok
        self.event.set()


class Recorder:
    """The shared state between request threads, the sampler and the writer of one process."""

    def __init__(
        self,
        queue_size: int,
        monitored_default: Callable[[str], bool],
        rule: OutlierRule | None = None,
    ) -> None:
        self.queue_size = queue_size
        #: the outlier rule, for the warm-up on request threads (None: the writer's alone)
        self.rule = rule
        self.queue: deque[Queued | FlushMarker] = deque()
        #: endpoint -> threshold in ns; absent while the endpoint warms up
        self.thresholds_ns: dict[str, int] = {}
        #: endpoint -> monitored? (replaced wholesale by the writer; filled lazily here)
        self.monitored: dict[str, bool] = {}
        self.monitored_default = monitored_default
        #: thread id -> the request it is serving, for the sampler
        self.inflight: dict[int, Record] = {}
        #: thread id -> the start of the request it began, until the Flask hooks' dispatch
        #: wrapper takes it (a request that never reaches it is removed when it ends)
        self.starts: dict[int, int] = {}
        self.sampler: StackSampler | None = None
        #: endpoints whose outlier captures reached the hourly cap (kept by the writer)
        self.capped: set[str] = set()
        #: records the writer has taken from the queue so far (counted on its thread)
        self.drained = 0
        self.dropped = 0
        self._drop_lock = threading.Lock()
        #: endpoint -> the statistics of its warm-up requests, until it has a threshold
        self._warming: dict[str, RunningStats] = {}
        self._warm_lock = threading.Lock()

    def is_monitored(self, endpoint: str) -> bool:
        flag = self.monitored.get(endpoint)
        if flag is None:
            flag = self.monitored[endpoint] = self.monitored_default(endpoint)
        return flag

    def set_monitor_flags(self, stored: dict[str, bool]) -> None:
        """Publish the store's flags, never monitoring what the configuration excludes."""
        default = self.monitored_default
        self.monitored = {name: flag and default(name) for name, flag in stored.items()}

    def activity(self) -> int:
        """A number that changes whenever requests end: the sampler polls while it does."""
        return self.drained + len(self.queue)

    def end(self, record: Record, end_ns: int) -> bool:
        """Queue a finished request that ended at ``end_ns``; return whether it is an outlier.

        The hooks inline this for the common case; a change here is a change there.
        """
        inflight = self.inflight
        if inflight.get(record[THREAD]) is record:
            del inflight[record[THREAD]]
        duration = record[DURATION] = end_ns - record[T0]
        threshold = record[THRESHOLD]
        outlier = threshold is not None and duration > threshold
        if outlier:
            record[OUTLIER] = True
        else:  # only an outlier's request facts and samples are read, later
            record[REQUEST] = record[SAMPLING] = None
            if threshold is None:
                self.warm_up(record[ENDPOINT], duration)
        if len(self.queue) < self.queue_size:
            self.queue.append(tuple(record))  # a tuple of atoms: the garbage collector skips it
        else:
            self.count_dropped(1)
        return outlier

    def warm_up(self, endpoint: str, duration_ns: int) -> None:
        """Count a request of ``endpoint`` that ended without a threshold; publish the
        endpoint's first threshold once its warm-up is complete (see the module's docstring).

        The writer's statistics see the same requests and take over at its next drain; until
        then this threshold is the same rule over the same durations.
        """
        rule = self.rule
        if rule is None:
            return
        if endpoint in self.thresholds_ns:  # the writer published one since the request began
            self._warming.pop(endpoint, None)
            return
        with self._warm_lock:
            stats = self._warming.get(endpoint)
            if stats is None:
                stats = self._warming[endpoint] = RunningStats(rule.window)
            stats.add(duration_ns / 1e6)
            threshold = rule.threshold_ms(stats)
            if threshold is None:
                return
            del self._warming[endpoint]
        self.thresholds_ns.setdefault(endpoint, int(threshold * 1e6))

    def flush_marker(self) -> FlushMarker:
        marker = FlushMarker()
        self.queue.append(marker)  # never refused: markers are tiny and answered promptly
        return marker

    def count_dropped(self, n: int) -> None:
        with self._drop_lock:
            self.dropped += n

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's queued records and requests are the parent's."""
        self.queue.clear()
        self.inflight.clear()
        self.starts.clear()
        self.sampler = None
        self.drained = 0
        self.dropped = 0
        self._drop_lock = threading.Lock()
        self._warming.clear()
        self._warm_lock = threading.Lock()
