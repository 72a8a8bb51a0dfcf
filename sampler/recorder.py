"""The request thread's side of the agent: register, compare, queue, return.

:meth:`Recorder.begin` registers a request with the stack sampler (one object, one dict store);
:meth:`Recorder.end` unregisters it, compares its duration with its endpoint's threshold and
queues one plain tuple. The writer thread drains :attr:`Recorder.queue`, keeps the running
statistics and publishes fresh thresholds back into :attr:`Recorder.thresholds_ns`; nothing here
blocks or does I/O.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from threading import get_ident
from typing import Any

from .stack_sampler import InFlight, StackSampler

__all__ = ["FlushMarker", "RawRecord", "Recorder"]

#: what :meth:`Recorder.end` queues: (endpoint, rule, method, status, t0_ns, duration_ns, group,
#: client_ip, threshold_ns, is_outlier, slot of an outlier to capture or None) -- a plain tuple,
#: the cheapest thing to build.
RawRecord = tuple[
    str,
    "str | None",
    str,
    int,
    int,
    int,
    "object",
    "str | None",
    "int | None",
    bool,
    "InFlight | None",
]


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

    def __init__(self, queue_size: int, monitored_default: Callable[[str], bool]) -> None:
        self.queue_size = queue_size
        self.queue: deque[RawRecord | FlushMarker] = deque()
        #: endpoint -> threshold in ns; absent while the endpoint warms up
        self.thresholds_ns: dict[str, int] = {}
        #: endpoint -> monitored? (replaced wholesale by the writer; filled lazily here)
        self.monitored: dict[str, bool] = {}
        self.monitored_default = monitored_default
        #: thread id -> the request it is serving, for the sampler
        self.inflight: dict[int, InFlight] = {}
        self.sampler: StackSampler | None = None
        #: endpoints whose outlier captures reached the hourly cap (kept by the writer)
        self.capped: set[str] = set()
        #: requests begun so far (approximate under threads; the sampler reads it as activity)
        self.begun = 0
        self.dropped = 0
        self._drop_lock = threading.Lock()

    def is_monitored(self, endpoint: str) -> bool:
        flag = self.monitored.get(endpoint)
        if flag is None:
            flag = self.monitored[endpoint] = self.monitored_default(endpoint)
        return flag

    def set_monitor_flags(self, stored: dict[str, bool]) -> None:
        """Publish the store's flags, never monitoring what the configuration excludes."""
        default = self.monitored_default
        self.monitored = {name: flag and default(name) for name, flag in stored.items()}

    def begin(self, endpoint: str, rule: str | None, t0: int) -> InFlight:
        """Register a request of a monitored endpoint that started at ``t0`` (perf_counter_ns)."""
        slot = InFlight(endpoint, rule, t0, get_ident(), self.thresholds_ns.get(endpoint))
        sampler = self.sampler
        if sampler is not None:
            if endpoint not in self.capped:
                slot.samples = []
            self.inflight[slot.thread_id] = slot
            self.begun += 1
            if sampler.idle:  # only after a quiet second: rare under traffic
                sampler.wake()
        return slot

    def end(self, slot: InFlight, end_ns: int, environ: Mapping[str, Any]) -> bool:
        """Queue a finished request; return whether it is an outlier.

        ``environ`` is the request's WSGI environ (its method and client address are read).
        """
        inflight = self.inflight
        if inflight.get(slot.thread_id) is slot:
            del inflight[slot.thread_id]
        t0 = slot.t0
        threshold = slot.threshold_ns
        outlier = threshold is not None and end_ns - t0 > threshold
        queue = self.queue
        if len(queue) < self.queue_size:
            queue.append(
                (
                    slot.endpoint,
                    slot.rule,
                    environ.get("REQUEST_METHOD", ""),
                    slot.status,
                    t0,
                    end_ns - t0,
                    slot.group,
                    environ.get("REMOTE_ADDR"),
                    threshold,
                    outlier,
                    slot if outlier else None,
                )
            )
        else:
            with self._drop_lock:
                self.dropped += 1
        return outlier

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
        self.sampler = None
        self.dropped = 0
        self._drop_lock = threading.Lock()
