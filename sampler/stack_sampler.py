"""The stack-sampling thread: what each in-flight request is doing, cheaply, until it matters.

One thread per process knows every in-flight request through the records (:mod:`.inflight`) that
the request threads register in a shared dict (``thread id -> record``); it keeps what it needs
per request in a :class:`~.inflight.Sampling` it creates itself, the first time it finds the
request in flight. It samples each request's
thread with :func:`sys._current_frames` at a low rate from the request's start, takes a sample
at the very moment the request crosses its endpoint's outlier threshold, and samples at a high
rate after that, so an outlier's profile covers the whole request and is detailed where the time
went. A threshold shorter than the low interval is checked at the request's first sample, one
interval after its start, rather than woken for: on an endpoint of 2 ms requests, waking at every
request's threshold made a round every few ms, and each round takes the GIL from a busy request
thread (paired runs of 2 ms CPU-bound requests: +36 µs (26-64) per request before, +12 µs (-8-38)
after, against flamewatch without the sampler).
A sample holds raw ``(code object, line)`` pairs -- strings are only built for outliers, by
:mod:`.profile_builder`, off the request thread. With nothing in flight the thread sleeps on an
event.

Limits, handled by the profile builder rather than hidden: a thread running Python can only be
sampled when the GIL switches (every ``sys.getswitchinterval()``, 5 ms by default), and code in
C that holds the GIL yields no sample at all. While any request is sampled at the high rate the
sampler lowers the switch interval to a quarter of that rate (:mod:`.switching`), so that a
CPU-bound outlier gets about as many samples as a sleeping one (a 60 ms one: ~45 instead of 8 on
a quiet machine), and puts it back when none is. Its first samples, below the threshold, still
wait for the GIL under the process's own interval. Each sample records the interval that was
due, and time beyond it (plus two of the process's switch intervals) goes to an ``[unsampled]``
frame. Frequent switches make a frame walk meet a thread that moves under it far likelier: the
walk pauses the garbage collector (see :func:`walk_stack`), without which it crashed the
process. Samples are taken at a fixed rate (one interval after the previous one was due), so a
sample that waited for the GIL does not push the later ones back.

The thread does no I/O: each blocking call hands the GIL to a CPU-bound request, and getting
it back costs a whole switch interval. Reading CPU and memory once a second here (a dozen
reads of ``/proc``) left the sampler blind for ~80 ms behind a CPU-bound request: one 62 ms
outlier in ~20 got no sample at all, others two or three. The writer takes those readings.
"""

from __future__ import annotations

import gc
import sys
import threading
from time import perf_counter_ns
from types import FrameType
from typing import TYPE_CHECKING, Any

from .inflight import (
    ENDPOINT,
    GROUP,
    SAMPLING,
    T0,
    THREAD,
    THRESHOLD,
    Record,
    Sample,
    Sampling,
    Stack,
)
from .logs import log_swallowed
from .switching import SWITCH_INTERVAL
from .worker import Worker

if TYPE_CHECKING:
    from .folding import StackFolder

__all__ = ["MAX_DEPTH", "StackSampler", "current_frames", "thin", "walk_stack"]

#: frames kept per sample, from the thread's root; deeper stacks end in a ``[truncated]`` frame
MAX_DEPTH = 200


class StackSampler(Worker):
    """The sampling thread. ``inflight`` is shared with the :class:`~.Recorder`."""

    thread_name = "flamewatch-sampler"

    def __init__(
        self,
        inflight: dict[int, Record],
        *,
        interval_s: float = 0.01,
        outlier_interval_s: float = 0.001,
        max_samples: int = 2000,
        activity: Any = None,
        idle_after_s: float = 1.0,
        folder: StackFolder | None = None,
        capped: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.inflight = inflight
        self.low_ns = int(interval_s * 1e9)
        self.high_ns = int(outlier_interval_s * 1e9)
        self.max_samples = max_samples
        #: a callable whose value changes as requests end: activity that keeps the thread polling
        self.activity = activity if activity is not None else (lambda: 0)
        self.idle_after_ns = int(idle_after_s * 1e9)
        #: endpoints whose outlier captures reached their hourly cap (kept by the writer): their
        #: requests are sampled for the folder only
        self.capped: set[str] = capped if capped is not None else set()
        self.idle = True
        self.samples_taken = 0
        self._own_id = 0
        self.folder = folder
        #: requests being sampled for the folder, by ``id(record)`` -> the record, its samples
        #: (``Sampling.samples``, or the sampler's own list for a request whose endpoint is not
        #: captured now), the start its samples are weighed from, and a sample for the folder
        #: alone, taken when a round first found the request
        self._folding: dict[int, tuple[Record, list[Sample], int, Sample | None]] = {}
        self._seen: dict[int, int] = {}  # the last round that found each in flight
        self._last_round = 0  # perf_counter ns of the previous round
        #: whether this sampler holds the switch interval low (a request past its threshold)
        self._fast = False

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Called by a request thread that registered a request while the sampler slept."""
        self.idle = False
        self._wake.set()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        # While requests come in, the thread polls at the low interval, so a request thread
        # never has to wake it; after ``idle_after_s`` without any, it sleeps until woken.
        self._own_id = threading.get_ident()
        self._last_round = perf_counter_ns() - self.low_ns
        last_active = perf_counter_ns()
        last_count = self.activity()
        while not self._stopping:
            now = perf_counter_ns()
            count = self.activity()
            if self.inflight or count != last_count:
                last_active, last_count = now, count
            elif now - last_active > self.idle_after_ns:
                self.idle = True
                if not self.inflight and self.activity() == last_count:  # re-check, then sleep
                    self._wake.wait()
                self._wake.clear()
                self.idle = False
                last_active = perf_counter_ns()
                last_count = self.activity()
                self._last_round = last_active - self.low_ns  # not the time it slept
                continue
            if self.inflight:
                try:
                    wait_ns = self.sample_due(now)
                except Exception:  # a bug here must not stop sampling for the process's life
                    log_swallowed("sampling the requests in flight")
                    wait_ns = self.low_ns
            else:
                self._switch_fast(False)
                wait_ns = self.low_ns
                self._last_round = now
                if self._folding:
                    self._fold_finished()
            self._wake.wait(max(wait_ns, 200_000) / 1e9)
            self._wake.clear()
        self._switch_fast(False)
        if self._folding:
            self._fold_finished()

    def sample_due(self, now: int) -> int:
        """Sample every request that is due; return the ns until the next one is."""
        frames = current_frames()
        low = self.low_ns
        next_due = now + low
        folding = self._folding if self.folder is not None else None
        capped = self.capped
        # what a first sample stands for: the gap since the previous round, at most 10 intervals
        since = max(self._last_round, now - 10 * low)
        self._last_round = now
        fast = False  # whether a request is sampled at the high rate
        for record in list(self.inflight.values()):
            state: Sampling | None = record[SAMPLING]
            if state is None:
                captured = record[ENDPOINT] not in capped
                if not captured and folding is None:
                    continue
                # the first sample one interval after the start, even when the threshold
                # comes sooner (see the module's docstring); later ones wake for it
                state = Sampling([] if captured else None, low, record[T0] + low)
                record[SAMPLING] = state
                samples = state.samples if state.samples is not None else []
                if folding is not None:
                    first = self._first_sample(record, state, frames, now)
                    folding[id(record)] = (record, samples, since, first)
            elif state.samples is None:
                found = None if folding is None else folding.get(id(record))
                if found is None:
                    continue
                samples = found[1]
            else:
                samples = state.samples
            if folding is not None:
                self._seen[id(record)] = now
            if state.next_due <= now:
                thread_id = record[THREAD]
                if thread_id in frames and thread_id != self._own_id:
                    self._sample(record, state, samples, thread_id, now)
            if state.crossed is not None:
                fast = True
            next_due = min(next_due, state.next_due)
        self._switch_fast(fast)
        if folding:
            self._fold_finished()
        return next_due - perf_counter_ns()

    def _switch_fast(self, fast: bool) -> None:
        """Hold the process's switch interval low while a request is past its threshold."""
        if fast != self._fast:
            self._fast = fast
            if fast:
                SWITCH_INTERVAL.lower(self.high_ns / 4e9)
            else:
                SWITCH_INTERVAL.restore()

    def _fold_finished(self) -> None:
        """Fold the samples of the requests that are no longer in flight."""
        folder, inflight, folding = self.folder, self.inflight, self._folding
        assert folder is not None
        done = [key for key, found in folding.items() if not _in_flight(found[0], inflight)]
        for key in done:
            record, samples, start, first = folding.pop(key)
            end = self._seen.pop(key, 0)
            if first is not None:
                samples = [first, *samples]
            if samples:
                try:
                    folder.fold(record[ENDPOINT], record[GROUP], samples, start, end)
                except Exception:
                    log_swallowed("folding a request's samples")

    def _first_sample(
        self, record: Record, state: Sampling, frames: dict[int, FrameType], now: int
    ) -> Sample | None:
        """A sample for the folder alone, of a request not due for its first sample yet (the
        profile of an outlier keeps its own schedule)."""
        thread_id = record[THREAD]
        if state.next_due <= now or thread_id == self._own_id:
            return None  # due in this very round
        stack = walk_stack(frames.get(thread_id))  # taken at the start of this round
        return None if not stack else (now, self.low_ns, stack)

    def _sample(
        self, record: Record, state: Sampling, samples: list[Sample], thread_id: int, now: int
    ) -> None:
        stack = walk_stack(current_frames().get(thread_id))  # fresh: see walk_stack
        if stack is None:
            return  # the thread moved on under the walk; it is due again at once
        if samples and samples[-1][2] == stack:
            stack = samples[-1][2]  # share the tuple: a stuck request costs little memory
        samples.append((now, state.interval_ns, stack))
        self.samples_taken += 1
        # a request sampled only for the aggregated profiles stays at the low rate
        threshold = record[THRESHOLD] if samples is state.samples else None
        t0 = record[T0]
        if state.crossed is None and threshold is not None and now - t0 >= threshold:
            state.crossed = stack  # the first sample past the threshold: switch to the high rate
            state.interval_ns = self.high_ns
        # at a fixed rate: one interval after this sample was due, not after it was taken, so
        # that waiting for the GIL does not push every later sample back (but never two
        # samples within half an interval)
        state.next_due = max(state.next_due + state.interval_ns, now + state.interval_ns // 2)
        if state.crossed is None and threshold is not None:
            state.next_due = min(state.next_due, t0 + threshold)
        if len(samples) >= self.max_samples:
            thin(samples)
            state.interval_ns *= 2


def _in_flight(record: Record, inflight: dict[int, Record]) -> bool:
    return inflight.get(record[THREAD]) is record


def current_frames() -> dict[int, FrameType]:
    """:func:`sys._current_frames`, with the garbage collector paused while it runs.

    CPython (3.11 and earlier 3.12 releases, gh-106883) builds that dict while holding the lock
    on the list of threads; a collection starting inside it can run Python code (a weakref
    callback), which may hand the GIL to a thread that then waits for that lock -- another
    sampler, or a thread starting or ending -- while this one waits for the GIL: the whole
    process hangs. It happened here with two apps' samplers in one process.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return sys._current_frames()
    finally:
        if paused:
            gc.enable()


def walk_stack(frame: FrameType | None) -> Stack | None:
    """The ``(code, line)`` pairs of a thread's stack, root first, at most :data:`MAX_DEPTH`;
    None when the walk met something that is not a frame.

    The walk runs with the garbage collector paused. On CPython 3.11, reading ``f_back`` of
    another thread's frame creates the frame object of the frame below, and that allocation
    could start a collection inside the read: a finalizer of the garbage (a socket closing)
    hands the GIL over, the sampled thread returns from that very frame and may end, freeing
    it, and the read goes on with freed memory. That crashed ``flamewatch demo`` about once in
    ten runs on a loaded machine (a segmentation fault in ``_PyFrame_MakeAndSetFrameObject``);
    ``tests/frame_walk_child.py`` makes it happen at will. Between two reads the GIL may still
    pass to other threads, which is safe: every frame object the walk holds stays valid (a
    frame that returns copies itself into its frame object). The frame should still come from
    a :func:`current_frames` taken just before, so that the stack is the thread's present one.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        pairs = []
        found: object = frame  # typed as what it may really be
        while found is not None:
            if type(found) is not FrameType:
                return None
            pairs.append((found.f_code, found.f_lineno))
            found = found.f_back
    finally:
        if paused:
            gc.enable()
    pairs.reverse()
    if len(pairs) > MAX_DEPTH:
        del pairs[MAX_DEPTH:]
        pairs.append((_TRUNCATED, 0))
    return tuple(pairs)


def thin(samples: list[Sample]) -> None:
    """Halve a full buffer, merging each pair's interval into the later sample of the pair."""
    merged: list[Sample] = []
    for i in range(1, len(samples), 2):
        earlier, later = samples[i - 1], samples[i]
        merged.append((later[0], earlier[1] + later[1], later[2]))
    if len(samples) % 2:
        merged.append(samples[-1])
    samples[:] = merged


def _truncated() -> None:  # pragma: no cover - never called; its code object marks a cut stack
    pass


_TRUNCATED = _truncated.__code__.replace(co_name="[truncated]")
