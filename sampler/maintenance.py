"""The writer's upkeep of its store: the connection with its back-off, the route sync, retention.

:class:`StoreLink` is the writer's one connection: opened on demand (the process registered
in the store once), closed on a failure and retried with back-off, so that a store that fails
never blocks a request -- records wait in memory meanwhile (:mod:`.ingest`). :class:`RouteSync`
records the app's routes, reads the stored monitor flags and refreshes the process's row every
``sync_interval``. :class:`Retention` deletes old rows and histograms: hourly, a few batches per
round, at most one process per hour (:mod:`.store.retention`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .logs import log
from .recorder import Recorder
from .store import ProcessInfo, RouteInfo, Store

__all__ = [
    "MAX_RETRY_INTERVAL",
    "RETENTION_BATCHES_PER_ROUND",
    "RETENTION_INTERVAL",
    "Retention",
    "RouteSync",
    "StoreLink",
]

#: the longest wait between two attempts on a failing store, in seconds
MAX_RETRY_INTERVAL = 30.0
RETENTION_INTERVAL = 3600.0
RETENTION_BATCHES_PER_ROUND = 2  # each of up to 5,000 rows: the writer stays responsive


class StoreLink:
    """The writer's connection to its store, retried with back-off while the store fails.

    ``on_registered`` runs once the process is registered in a store (to seed what depends
    on its contents); ``on_failure`` after each failure (to shed what no longer fits in
    memory). ``queue_size`` is what the failure's message says may wait.
    """

    def __init__(
        self,
        store: Store,
        process: ProcessInfo,
        *,
        queue_size: int,
        on_registered: Callable[[], None],
        on_failure: Callable[[], None],
    ) -> None:
        self.store = store
        self.process = process
        self.queue_size = queue_size
        self.on_registered = on_registered
        self.on_failure = on_failure
        self.connected = False
        self.process_id: int | None = None
        self.failures = 0  # consecutive failures; 0 while the store works
        self.retry_at = 0.0

    def ready(self, force: bool = False) -> bool:
        """Open the store (and register this process once), unless it failed too recently."""
        if self.connected:
            return True
        if not force and time.monotonic() < self.retry_at:
            return False
        try:
            self.store.open()
            if self.process_id is None:
                self.process_id = self.store.register_process(self.process)
                self.on_registered()
        except Exception as exc:
            self.failed("open", exc)
            return False
        self.connected = True
        return True

    def failed(self, action: str, exc: Exception) -> None:
        """Say the store failed (once, until it works again), close it and retry later."""
        if not self.failures:
            log.error(
                "flamewatch: cannot %s the store %s: %s; requests keep being served, records"
                " wait in memory (up to %d, then are dropped and counted) while it is retried",
                action,
                self.store.url,
                exc,
                self.queue_size,
            )
        else:
            log.debug("flamewatch: store still failing (%s): %s", action, exc)
        self.failures += 1
        self.retry_at = time.monotonic() + min(0.5 * 2 ** min(self.failures, 6), MAX_RETRY_INTERVAL)
        self.connected = False
        self.store.close()  # reopened on the next attempt
        self.on_failure()

    def recovered(self) -> None:
        """The store took a write: say so if it had failed, and stop backing off."""
        if self.failures:
            log.warning("flamewatch: the store %s is writable again", self.store.url)
            self.failures = 0
            self.retry_at = 0.0

    def next_wait(self, interval: float) -> float:
        """How long the writer may sleep: ``interval``, or until the next retry."""
        if self.failures:
            return max(0.05, min(self.retry_at - time.monotonic(), MAX_RETRY_INTERVAL))
        return interval

    def dropped_if_replaced(self) -> bool:
        """Whether the store was replaced under the writer (its file deleted or swapped for
        another); if so its connection and cached ids are dropped, and the process will be
        registered again when it is opened again (a new file gets the schema)."""
        why = self.store.replaced()
        if why is None:
            return False
        log.error(
            "flamewatch: the store %s is not the one this process opened: %s; it is opened"
            " again (a new file gets the schema), and requests are written to it from now on",
            self.store.url,
            why,
        )
        self.store.close()
        self.store.forget()
        self.connected = False
        self.process_id = None  # registered again, in the new store
        return True

    def close(self, dropped: int) -> None:
        """Refresh the process's row a last time (if connected) and close the store."""
        if self.connected and self.process_id is not None:
            try:
                self.store.update_process(self.process_id, last_seen=time.time(), dropped=dropped)
            except Exception as exc:
                log.debug("flamewatch: final process update failed: %s", exc)
        self.store.close()
        self.connected = False


class RouteSync:
    """Every ``interval`` seconds: the app's routes (when they changed), the stored monitor
    flags (into the recorder) and the process's heartbeat and dropped count."""

    def __init__(
        self,
        link: StoreLink,
        recorder: Recorder,
        routes: Callable[[], Sequence[RouteInfo]] | None,
        interval: float,
    ) -> None:
        self.link = link
        self.recorder = recorder
        self.routes = routes
        self.interval = interval
        self._last_routes: frozenset[RouteInfo] = frozenset()
        self._next_sync = 0.0

    def forget(self) -> None:
        """Record the routes again at the next sync (the store was replaced)."""
        self._last_routes = frozenset()

    def sync_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + self.interval
        store, process_id = self.link.store, self.link.process_id
        assert process_id is not None
        try:
            if self.routes is not None:
                routes = frozenset(self.routes())
                if routes != self._last_routes:
                    store.record_routes(
                        sorted(routes), self.recorder.monitored_default, time.time()
                    )
                    self._last_routes = routes
            self.recorder.set_monitor_flags(store.monitor_flags())
            store.update_process(process_id, last_seen=time.time(), dropped=self.recorder.dropped)
        except Exception as exc:
            self.link.failed("sync with", exc)


class Retention:
    """Deletes raw rows older than ``retention_days`` and histograms older than
    ``histogram_retention_days`` (None: kept), a few batches per round; ``wake`` asks the
    writer for another round soon when some remain."""

    def __init__(
        self,
        link: StoreLink,
        wake: Callable[[], None],
        retention_days: float | None,
        histogram_retention_days: float | None,
        interval: float = RETENTION_INTERVAL,
    ) -> None:
        self.link = link
        self.wake = wake
        self.retention_days = retention_days
        self.histogram_retention_days = histogram_retention_days
        self.interval = interval
        self.pruned = 0  # rows this process deleted for retention
        self.pruned_histograms = 0  # histogram rows this process deleted for retention
        self._next_run = 0.0
        #: (raw rows', histograms' cutoff) while a retention run is under way; None: done
        self._cutoffs: tuple[float | None, float | None] | None = None

    def run_if_due(self, *, busy: bool) -> None:
        """A few batches of retention, when it is due and this process claimed the run: raw
        rows first, then histograms, each tier with its own cutoff. Never while ``busy``
        (requests wait to be written: they go first)."""
        tiers = (self.retention_days, self.histogram_retention_days)
        if tiers == (None, None) or not self.link.connected or busy:
            return
        now = time.monotonic()
        if self._cutoffs is None and now < self._next_run:
            return
        store = self.link.store
        try:
            if self._cutoffs is None:
                self._next_run = now + self.interval
                if not store.claim_retention_run(self.interval):
                    return  # another process ran it within the interval
                wall = time.time()
                self._cutoffs = (
                    None if tiers[0] is None else wall - tiers[0] * 86_400,
                    None if tiers[1] is None else wall - tiers[1] * 86_400,
                )
            rows_cutoff, histograms_cutoff = self._cutoffs
            done = True
            if rows_cutoff is not None:
                pruned = store.prune(rows_cutoff, max_batches=RETENTION_BATCHES_PER_ROUND)
                self.pruned += pruned.outliers + pruned.requests
                if not pruned.done:
                    done = False
                else:
                    self._cutoffs = (None, histograms_cutoff)
            if done and histograms_cutoff is not None:
                histograms = store.prune_histograms(
                    histograms_cutoff, max_batches=RETENTION_BATCHES_PER_ROUND
                )
                self.pruned_histograms += histograms.rows
                done = histograms.done
        except Exception as exc:
            self.link.failed("prune", exc)
            return
        if done:
            self._cutoffs = None
        else:
            self.wake()  # more to delete: next round, after whatever was queued
