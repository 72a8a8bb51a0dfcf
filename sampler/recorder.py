"""The request thread's side of the agent: compare, queue, return.

:meth:`Recorder.end` is all a finished request costs: one dict lookup for its endpoint's
threshold, one comparison, one tuple, one ``deque.append``. The writer thread drains
:attr:`Recorder.queue`, keeps the running statistics and publishes fresh thresholds back into
:attr:`Recorder.thresholds_ns`; nothing here blocks or does I/O.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["FlushMarker", "RawRecord", "Recorder"]

#: what :meth:`Recorder.end` queues: (endpoint, rule, method, status, started_at, duration_ns,
#: group, client_ip, threshold_ns, is_outlier) -- a plain tuple, the cheapest thing to build.
RawRecord = tuple[
    str, "str | None", str, int, float, int, "str | int | None", "str | None", "int | None", bool
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
    """The shared state between request threads and the writer thread of one process."""

    def __init__(self, queue_size: int, monitored_default: Callable[[str], bool]) -> None:
        self.queue_size = queue_size
        self.queue: deque[RawRecord | FlushMarker] = deque()
        #: endpoint -> threshold in ns; absent while the endpoint warms up
        self.thresholds_ns: dict[str, int] = {}
        #: endpoint -> monitored? (replaced wholesale by the writer; filled lazily here)
        self.monitored: dict[str, bool] = {}
        self.monitored_default = monitored_default
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

    def end(
        self,
        endpoint: str,
        rule: str | None,
        method: str,
        status: int,
        started_at: float,
        duration_ns: int,
        group: str | int | None,
        client_ip: str | None,
    ) -> bool:
        """Queue a finished request; return whether it is an outlier."""
        threshold = self.thresholds_ns.get(endpoint)
        outlier = threshold is not None and duration_ns > threshold
        queue = self.queue
        if len(queue) < self.queue_size:
            queue.append(
                (
                    endpoint,
                    rule,
                    method,
                    status,
                    started_at,
                    duration_ns,
                    group,
                    client_ip,
                    threshold,
                    outlier,
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
        """In a forked child: the parent's queued records are the parent's to write."""
        self.queue.clear()
        self.dropped = 0
        self._drop_lock = threading.Lock()
