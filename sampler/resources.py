"""CPU load and memory, read in the background and attached to outliers.

psutil calls cost 12-40 µs each, so they never run on a request thread: the writer thread takes
a :class:`Reading` about once a second while requests come in
(:meth:`ResourceMonitor.read_if_due`), and one more when it captures an outlier. Not the sampler
thread: a reading is a dozen reads of ``/proc``, each of which hands the GIL to a CPU-bound
request and waits a switch interval to get it back, and the sampler would see nothing meanwhile.
An outlier's CPU load is measured between the last reading taken before it started and the first
one after it ended -- the span is reported with it, as a 1 ms request cannot have a CPU load
measured over 1 ms.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

import psutil

__all__ = ["Reading", "ResourceMonitor"]


@dataclass(frozen=True)
class Reading:
    taken_at: int  # perf_counter_ns
    system_busy: float  # seconds of CPU time, all CPUs, not idle
    system_total: float  # seconds of CPU time, all CPUs
    process_cpu: float  # seconds of CPU time of this process (user + system)
    rss: int  # bytes
    available: int  # bytes of system memory available
    threads: int


class ResourceMonitor:
    """A short history of readings and the load between two of them."""

    def __init__(self, history: int = 300) -> None:
        self._process = psutil.Process(os.getpid())
        self._readings: deque[Reading] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._activity_read: int | None = None  # the activity at the last periodic reading
        self._last_read = 0  # perf_counter ns of the last periodic reading

    def read_if_due(self, activity: int, in_flight: bool, interval_ns: int = 1_000_000_000) -> bool:
        """Take a reading when requests came in (``activity`` changed, or one is in flight) and
        ``interval_ns`` passed since the last one; return whether it did. A quiet process reads
        nothing."""
        now = perf_counter_ns()
        if now - self._last_read < interval_ns:
            return False
        if not in_flight and activity == self._activity_read:
            return False
        self._activity_read, self._last_read = activity, now
        self.read()
        return True

    def read(self) -> Reading:
        """Take a reading now and keep it."""
        times = psutil.cpu_times()
        total = sum(times)
        idle = times.idle + getattr(times, "iowait", 0.0)
        cpu = self._process.cpu_times()
        reading = Reading(
            taken_at=perf_counter_ns(),
            system_busy=total - idle,
            system_total=total,
            process_cpu=cpu.user + cpu.system,
            rss=self._process.memory_info().rss,
            available=psutil.virtual_memory().available,
            threads=self._process.num_threads(),
        )
        with self._lock:
            self._readings.append(reading)
        return reading

    def before(self, t_ns: int) -> Reading | None:
        """The latest reading taken at or before ``t_ns`` (else the oldest one kept)."""
        with self._lock:
            readings = list(self._readings)
        best = None
        for reading in readings:
            if reading.taken_at <= t_ns:
                best = reading
        return best or (readings[0] if readings else None)

    def load(self, start_ns: int) -> dict[str, Any]:
        """CPU and memory facts for a request that started at ``start_ns`` and has ended."""
        first = self.before(start_ns)
        last = self.read()
        facts: dict[str, Any] = {
            "rss_bytes": last.rss,
            "available_bytes": last.available,
            "threads": last.threads,
            "cpu_count": psutil.cpu_count() or 1,
        }
        try:
            facts["load_average"] = list(os.getloadavg())
        except OSError:  # pragma: no cover - not on every platform
            facts["load_average"] = None
        if first is not None and last.taken_at > first.taken_at:
            span = (last.taken_at - first.taken_at) / 1e9
            total = last.system_total - first.system_total
            facts["cpu_span_s"] = round(span, 3)
            facts["system_cpu_percent"] = (
                round(100 * (last.system_busy - first.system_busy) / total, 1)
                if total > 0
                else None
            )
            # like top: 100 % is one CPU fully busy
            facts["process_cpu_percent"] = round(
                100 * (last.process_cpu - first.process_cpu) / span, 1
            )
        else:
            facts["cpu_span_s"] = None
            facts["system_cpu_percent"] = None
            facts["process_cpu_percent"] = None
        return facts
