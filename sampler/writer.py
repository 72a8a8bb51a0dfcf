"""The background writer: one thread per process between the request queue and the store.

Every ``flush_interval`` seconds (or at once when flushed) its loop runs the parts that each do
one job, in this order: :class:`~.ingest.Ingest` drains :attr:`Recorder.queue` into a batch,
feeding :class:`~.thresholds.Thresholds` (each endpoint's statistics, whose outlier thresholds
it publishes back to the :class:`Recorder`) and capturing outliers within
:class:`~.capture_quota.CaptureQuota`; :class:`~.maintenance.StoreLink` opens the store (with
back-off after a failure); :class:`~.maintenance.RouteSync` records the app's routes, reads the
stored monitor flags and refreshes the process's row every ``sync_interval``; the batch is
written (with its latency histograms); :class:`~.maintenance.Retention` deletes old rows and
histograms when ``retention_days`` or ``histogram_retention_days`` is set; and
:class:`~.profile_flush.ProfileFlush` adds what the sampler folded to the aggregated profiles
every ``profile_interval``. Work other threads hand over (:meth:`Writer.on_store`, e.g. the
dashboard's monitor switch) runs with the same link, after the route sync
(:mod:`.store_commands`): a process keeps one connection to its store. A store that fails is
logged once, retried with back-off, and never blocks a request: records wait in memory up to
the queue's cap and are counted as dropped beyond it. A store whose server went away
(PostgreSQL) is the same case. A SQLite file deleted or replaced under the writer is noticed
before and after each batch and opened again (a new file gets the schema).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from .capture import Capturer
from .capture_quota import CaptureQuota
from .folding import StackFolder
from .ingest import BATCH_SIZE, Ingest, Losses
from .logs import log, log_swallowed
from .maintenance import (
    MAX_RETRY_INTERVAL,
    RETENTION_BATCHES_PER_ROUND,
    RETENTION_INTERVAL,
    Retention,
    RouteSync,
    StoreLink,
)
from .profile_flush import ProfileFlush
from .recorder import Recorder
from .resources import ResourceMonitor
from .stats import OutlierRule, RunningStats
from .store import ProcessInfo, RouteInfo, Store, StoreError
from .store_commands import StoreCommands
from .thresholds import Thresholds, seed_statistics, thresholds_ns
from .worker import Worker

__all__ = [
    "BATCH_SIZE",
    "MAX_RETRY_INTERVAL",
    "RETENTION_BATCHES_PER_ROUND",
    "RETENTION_INTERVAL",
    "Writer",
    "seed_statistics",
    "thresholds_ns",
]

T = TypeVar("T")


class Writer(Worker):
    """Drains a :class:`Recorder` into a :class:`Store` on its own daemon thread."""

    thread_name = "flamewatch-writer"

    def __init__(
        self,
        store: Store,
        recorder: Recorder,
        rule: OutlierRule,
        process: ProcessInfo,
        *,
        flush_interval: float = 1.0,
        sync_interval: float = 2.0,
        routes: Callable[[], Sequence[RouteInfo]] | None = None,
        capturer: Capturer | None = None,
        captures_per_hour: int = 20,
        retention_days: float | None = None,
        retention_interval: float = RETENTION_INTERVAL,
        histogram_retention_days: float | None = None,
        folder: StackFolder | None = None,
        profile_interval: float = 10.0,
        stats: Mapping[str, RunningStats] | None = None,
        resources: ResourceMonitor | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.recorder = recorder
        self.rule = rule
        self.process = process
        self.flush_interval = flush_interval
        #: CPU and memory, read about once a second while requests come in (see .resources)
        self.resources = resources
        self._urgent = False  # a flush is waiting: retry a failing store now
        self.thresholds = Thresholds(rule, recorder, stats)
        self.link = StoreLink(
            store,
            process,
            queue_size=recorder.queue_size,
            on_registered=self._seed,
            on_failure=self._after_failure,
        )
        self.losses = Losses(recorder, store.url)
        self.captures = (
            None
            if capturer is None
            else CaptureQuota(capturer, recorder, process, captures_per_hour)
        )
        self.ingest = Ingest(
            self.link,
            recorder,
            self.thresholds,
            self.captures,
            self.losses,
            self._reopened_if_replaced,
        )
        self._pending = self.ingest.pending  # the same list (benchmarks read its length)
        self.route_sync = RouteSync(self.link, recorder, routes, sync_interval)
        self.commands = StoreCommands(self.link)
        self.retention = Retention(
            self.link,
            self._wake.set,
            retention_days,
            histogram_retention_days,
            retention_interval,
        )
        self.profiles = (
            None
            if folder is None
            else ProfileFlush(self.link, folder, profile_interval, self.losses.report)
        )

    # -- what the parts counted ---------------------------------------------------------------

    @property
    def stats(self) -> dict[str, RunningStats]:
        """Endpoint -> its running statistics."""
        return self.thresholds.stats

    @property
    def written(self) -> int:
        """Records written to the store by this writer."""
        return self.ingest.written

    @property
    def refused(self) -> int:
        """Records the store refused (counted as dropped too)."""
        return self.ingest.refused

    @property
    def captured(self) -> int:
        """Outliers captured with their profile."""
        return 0 if self.captures is None else self.captures.captured

    @property
    def pruned(self) -> int:
        """Rows this process deleted for retention."""
        return self.retention.pruned

    @property
    def pruned_histograms(self) -> int:
        """Histogram rows this process deleted for retention."""
        return self.retention.pruned_histograms

    # -- control, from any thread -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout or a failing store."""
        if not self.alive:
            return not self.recorder.queue
        marker = self.recorder.flush_marker()
        failures = self.link.failures
        self._urgent = True
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not marker.event.wait(0.05):
            if self.link.failures > failures:
                return False  # the store failed again on the retry this flush asked for
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return marker.ok

    def on_store(self, action: Callable[[Store], T], timeout: float | None = None) -> T:
        """Run ``action`` with the writer's store, on the writer's thread, and return what it
        returned (or raise what it raised): the one connection of the process, never a
        second. Raises :class:`StoreError` when the writer is not running, the store cannot
        be opened, or ``timeout`` passed first -- the action has not run then, and never will.
        """
        if not self.alive:
            raise StoreError("flamewatch's writer is not running in this process")
        command = self.commands.submit(action)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not command.done.wait(0.05):
            stopped = not self.alive
            late = deadline is not None and time.monotonic() >= deadline
            # cancel() is False when the writer took the command a moment ago: it is answered
            # once it has run
            if (stopped or late) and command.cancel():
                why = "stopped" if stopped else f"did not reach the store within {timeout} s"
                raise StoreError(f"flamewatch's writer {why}; nothing was done")
        return command.result()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        ingest, link = self.ingest, self.link
        try:
            while True:
                stopping = self._stopping
                self._read_resources()
                held_back = ingest.drain()
                # a flush, a stop, or another thread waiting on a command
                urgent = stopping or self._urgent or bool(ingest.markers) or self.commands.pending
                self._urgent = False
                if link.ready(force=urgent):
                    self.route_sync.sync_if_due(force=urgent)
                    self.commands.run_pending()  # before the batch: a request thread waits
                    ingest.write_pending()
                    if not stopping:
                        self.retention.run_if_due(busy=bool(ingest.pending))
                    if self.profiles is not None:
                        self.profiles.write_if_due(force=urgent)
                else:
                    self.commands.refuse_pending()
                ingest.answer_markers()
                if stopping:
                    break
                if held_back and link.connected and not ingest.pending:
                    continue  # the store is back: take what waited in the queue at once
                self._wake.wait(link.next_wait(self.flush_interval))
                self._wake.clear()
        except Exception:  # a bug here must not take the process down; say so loudly once
            log.exception("flamewatch: the writer thread failed; requests are no longer stored")
        finally:
            self._shutdown()

    def _read_resources(self) -> None:
        resources, recorder = self.resources, self.recorder
        if resources is None:
            return
        try:
            resources.read_if_due(recorder.activity(), bool(recorder.inflight))
        except Exception:
            log_swallowed("reading CPU and memory")

    def _seed(self) -> None:
        """The process was registered: seed the endpoints' statistics from the store."""
        self.thresholds.seed(self.store.baselines(self.process.version, self.rule.window))

    def _after_failure(self) -> None:
        self.ingest.shed_excess()
        self.losses.log()

    def _reopened_if_replaced(self) -> bool:
        """Whether the store was replaced under the writer (its file deleted or swapped for
        another); if so it is opened again -- a new file gets the schema -- and this process
        registered in it. ``link.connected`` says whether that worked (else it is retried)."""
        if not self.link.dropped_if_replaced():
            return False
        self.route_sync.forget()
        if self.link.ready(force=True):
            self.route_sync.sync_if_due(force=True)
        return True

    def _shutdown(self) -> None:
        # what a failing store held back in the queue, or came in after the last drain, is
        # lost as well -- and counted
        lost = self.ingest.discard()
        if lost:
            log.error(
                "flamewatch: %d records could not be written to %s and are lost",
                lost,
                self.store.url,
            )
            self.losses.lost_at_exit(lost)  # said just above
        self.losses.log(force=True)
        self.ingest.answer_markers()
        self.commands.refuse_pending("flamewatch's writer stopped")
        self.link.close(self.recorder.dropped)
