"""The background writer: one thread per process between the request queue and the store.

It drains :attr:`Recorder.queue` every ``flush_interval`` seconds (or at once when flushed),
writes the records in batches, feeds each endpoint's :class:`RunningStats` and publishes its
outlier threshold back to the :class:`Recorder`. Every ``sync_interval`` it also records the
app's routes, reads the stored monitor flags and refreshes its process row; every
``profile_interval`` (and on a flush or at exit) it adds what the sampler folded into the
aggregated profiles (:mod:`.folding`). A store that fails
is logged once, retried with back-off, and never blocks a request: records wait in memory up
to the queue's cap and are counted as dropped beyond it. A store whose server went away
(PostgreSQL) is the same case: closed, reopened with back-off, and what waited is written.
A batch the store *refuses* (a value it cannot take; :mod:`.store.failures` tells the two
apart) is split until every record it can take is written; the records it refused are
counted as dropped. A SQLite file deleted or replaced under the writer is noticed before and
after each batch and opened again (a new file gets the schema). Every record lost is logged,
with its count and why, at most once a minute per reason (:class:`.logs.LossReport`).
With ``retention_days`` set, the writer also deletes old rows (:mod:`.store.retention`),
and with ``histogram_retention_days`` old histograms: hourly, a few batches per round, at most
one process per hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from .capture import Capturer
from .folding import StackFolder
from .inflight import (
    DURATION,
    T0,
    Queued,
)
from .logs import LossReport, log_swallowed
from .recorder import FlushMarker, Recorder
from .stats import OutlierRule, RunningStats
from .store import (
    Baseline,
    ProcessInfo,
    ProfileStack,
    RequestFields,
    RequestRecord,
    RouteInfo,
    Store,
)
from .store.connection import connection_of
from .store.failures import failure_reason, is_store_away
from .store.retention import claim_retention_run, prune, prune_histograms
from .worker import Worker

__all__ = ["Writer", "seed_statistics", "thresholds_ns"]

log = logging.getLogger("flamewatch")

BATCH_SIZE = 5000
MAX_RETRY_INTERVAL = 30.0
RETENTION_INTERVAL = 3600.0
RETENTION_BATCHES_PER_ROUND = 2  # each of up to 5,000 rows: the writer stays responsive


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
    ) -> None:
        super().__init__()
        self.store = store
        self.recorder = recorder
        self.rule = rule
        self.process = process
        self.flush_interval = flush_interval
        self.sync_interval = sync_interval
        self.routes = routes
        self.capturer = capturer
        self.captures_per_hour = captures_per_hour
        self.captured = 0
        self._capture_counts: dict[str, tuple[int, int]] = {}  # endpoint -> (hour, count)
        #: endpoint -> its running statistics (``stats``: seeded before the thread started)
        self.stats: dict[str, RunningStats] = dict(stats or {})
        self.written = 0
        self._process_id: int | None = None
        self._connected = False
        self._pending: list[RequestFields] = []
        self._markers: list[FlushMarker] = []
        self._last_routes: frozenset[RouteInfo] = frozenset()
        self._next_sync = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._urgent = False  # a flush is waiting: retry a failing store now
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self.pruned = 0  # rows this process deleted for retention
        self.pruned_histograms = 0  # histogram rows this process deleted for retention
        self._next_retention = 0.0
        self.histogram_retention_days = histogram_retention_days
        #: (raw rows', histograms' cutoff) while a retention run is under way; None: done
        self._retention_cutoffs: tuple[float | None, float | None] | None = None
        self.folder = folder
        self.profile_interval = profile_interval
        self._next_profiles = time.monotonic() + profile_interval
        #: folded stacks taken from the folder but not written yet (the store failed); while
        #: they wait, the folder keeps folding into its own bounded tables
        self._profiles: list[ProfileStack] = []
        self.refused = 0  # records the store refused (counted as dropped too)
        self._losses = LossReport()
        self._dropped_seen = 0  # of the recorder's dropped count, what _losses has been told

    # -- control, from any thread -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout or a failing store."""
        if not self.alive:
            return not self.recorder.queue
        marker = self.recorder.flush_marker()
        failures = self._failures
        self._urgent = True
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not marker.event.wait(0.05):
            if self._failures > failures:
                return False  # the store failed again on the retry this flush asked for
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return marker.ok

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                stopping = self._stopping
                held_back = self._drain()
                urgent = stopping or self._urgent or bool(self._markers)  # a flush or a stop
                self._urgent = False
                if self._ready(force=urgent):
                    self._sync_if_due(force=urgent)
                    self._write_pending()
                    if not stopping:
                        self._retain_if_due()
                    self._write_profiles_if_due(force=urgent)
                self._answer_markers()
                if stopping:
                    break
                if held_back and self._connected and not self._pending:
                    continue  # the store is back: take what waited in the queue at once
                self._wake.wait(self._next_wait())
                self._wake.clear()
        except Exception:  # a bug here must not take the process down; say so loudly once
            log.exception("flamewatch: the writer thread failed; requests are no longer stored")
        finally:
            self._shutdown()

    def _next_wait(self) -> float:
        if self._failures:
            return max(0.05, min(self._retry_at - time.monotonic(), MAX_RETRY_INTERVAL))
        return self.flush_interval

    def _drain(self) -> bool:
        """Move queued records into the pending batch, updating statistics as they pass.

        While the store fails, at most ``queue_size`` records wait here: the rest stay queued,
        where the request threads count what no longer fits as dropped. Returns whether
        records were held back in the queue for that reason.
        """
        # This loop runs for every request, holding the GIL the app's threads want: the
        # queued tuple is unpacked once into a plain tuple of RequestRecord's fields (no
        # named tuple built, no call), and the statistics are updated once per endpoint with
        # the durations gathered here. The start's wall clock is taken from a perf counter
        # reading near it: the small difference converts to a float without the slow path a
        # 64-bit integer takes.
        queue, pending, cap = self.recorder.queue, self._pending, self.recorder.queue_size
        capturer = self.capturer
        durations: dict[str, list[float]] = {}
        taken = 0
        base_ns, base_s = time.perf_counter_ns(), time.time()
        while queue and not (self._failures and len(pending) >= cap):
            item = queue.popleft()
            if isinstance(item, FlushMarker):
                self._markers.append(item)
                continue
            taken += 1
            # the layout of flamewatch.sampler.inflight
            (endpoint, rule, method, status, t0, duration_ns, group, client_ip, threshold_ns,
             outlier, _, _, _, _, _) = item  # fmt: skip
            duration = duration_ns / 1e6
            record: RequestFields = (
                endpoint,
                rule,
                method,
                status,
                base_s + (t0 - base_ns) * 1e-9,
                duration,
                client_ip if group is None else group if group.__class__ is str else str(group),
                client_ip,
                outlier,
                None if threshold_ns is None else threshold_ns / 1e6,
                None,
            )
            if outlier and capturer is not None:
                record = self._outlier(RequestRecord._make(record), item)
            pending.append(record)
            found = durations.get(endpoint)
            if found is None:
                durations[endpoint] = [duration]
            else:
                found.append(duration)
        self.recorder.drained += taken
        self._update_thresholds(durations)
        return bool(queue) and bool(self._failures)

    def _update_thresholds(self, durations: dict[str, list[float]]) -> None:
        """Feed each endpoint's new durations to its statistics; publish its threshold."""
        rule, stats, thresholds = self.rule, self.stats, self.recorder.thresholds_ns
        for endpoint, values in durations.items():
            endpoint_stats = stats.get(endpoint)
            if endpoint_stats is None:
                endpoint_stats = stats[endpoint] = RunningStats(rule.window)
            # winsorized at the threshold in force: a burst of slow requests cannot raise the
            # bar it is measured against
            endpoint_stats.add_all(values, cap=rule.threshold_ms(endpoint_stats))
            threshold = rule.threshold_ms(endpoint_stats)
            if threshold is not None:
                thresholds[endpoint] = int(threshold * 1e6)

    def _outlier(self, record: RequestRecord, raw: Queued) -> RequestRecord:
        """An outlier's record, with its capture when the hourly cap allows one."""
        return self._capture(record, raw) if self._may_capture(record) else record

    def _may_capture(self, record: RequestRecord) -> bool:
        """At most ``captures_per_hour`` captures per endpoint (this process's version)."""
        hour = int(record.started_at // 3600)
        last_hour, count = self._capture_counts.get(record.endpoint, (hour, 0))
        if last_hour != hour:
            count = 0
            self.recorder.capped.discard(record.endpoint)
        if count >= self.captures_per_hour:
            return False
        count += 1
        self._capture_counts[record.endpoint] = (hour, count)
        if count >= self.captures_per_hour:
            self.recorder.capped.add(record.endpoint)  # the sampler skips it until next hour
        return True

    def _capture(self, record: RequestRecord, raw: Queued) -> RequestRecord:
        assert self.capturer is not None
        facts = {
            "endpoint": record.endpoint,
            "rule": record.rule,
            "method": record.method,
            "status": record.status,
            "duration_ms": record.duration_ms,
            "threshold_ms": record.threshold_ms,
            "group": record.group,
            "remote_addr": record.client_ip,
            "version": self.process.version,
            "host": self.process.hostname,
            "pid": self.process.pid,
        }
        try:
            capture = self.capturer.capture(
                raw,
                raw[T0] + raw[DURATION],
                started_at=record.started_at,
                facts=facts,
                description=f"{record.method} {record.rule or record.endpoint}"
                f" ({record.endpoint}, version {self.process.version})",
            )
        except Exception:
            log_swallowed("capturing an outlier")
            return record
        self.captured += 1
        return record._replace(capture=capture)

    def _ready(self, force: bool = False) -> bool:
        """Open the store (and register this process once), unless it failed too recently."""
        if self._connected:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            self.store.open()
            if self._process_id is None:
                self._process_id = self.store.register_process(self.process)
                self._seed()
        except Exception as exc:
            self._failed("open", exc)
            return False
        self._connected = True
        return True

    def _seed(self) -> None:
        baselines = self.store.baselines(self.process.version, self.rule.window)
        # endpoints seeded before the process started, or already warmed up here, keep theirs
        seeded = {
            endpoint: stats
            for endpoint, stats in seed_statistics(baselines, self.rule).items()
            if endpoint not in self.stats
        }
        self.stats.update(seeded)
        for endpoint, threshold_ns in thresholds_ns(seeded, self.rule).items():
            self.recorder.thresholds_ns.setdefault(endpoint, threshold_ns)

    def _sync_if_due(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + self.sync_interval
        assert self._process_id is not None
        try:
            if self.routes is not None:
                routes = frozenset(self.routes())
                if routes != self._last_routes:
                    self.store.record_routes(
                        sorted(routes), self.recorder.monitored_default, time.time()
                    )
                    self._last_routes = routes
            self.recorder.set_monitor_flags(self.store.monitor_flags())
            self.store.update_process(
                self._process_id, last_seen=time.time(), dropped=self.recorder.dropped
            )
        except Exception as exc:
            self._failed("sync with", exc)

    def _write_pending(self) -> None:
        if self._reopened_if_replaced() and not self._connected:
            return
        while self._pending:
            batch = self._pending[:BATCH_SIZE]
            done, refused, away = self._write_batch(batch)
            if away is None and self._reopened_if_replaced():
                if not self._connected:
                    return  # the batch waits for the store to open again
                continue  # it went to a file that is gone: write it again, to the new one
            del self._pending[:done]
            self.written += done - len(refused)
            self._refuse(refused)
            if away is not None:
                self._failed("write to", away)
                return
        if self._failures:
            log.warning("flamewatch: the store %s is writable again", self.store.url)
            self._failures = 0
            self._retry_at = 0.0
        self._report_losses()

    def _write_batch(
        self, batch: Sequence[RequestFields]
    ) -> tuple[int, list[Exception], Exception | None]:
        """Write a batch, halving the parts the store refuses down to single records.

        Parts are written in order, so what is handled is always the batch's first records.
        Returns how many those are (written or refused), the error of each record refused,
        and the error of a store found away (the rest of the batch waits for it). A batch
        with ``k`` bad records among ``n`` costs about ``2 k log2(n)`` writes.
        """
        assert self._process_id is not None
        refused: list[Exception] = []
        parts = [(0, len(batch))]
        done = 0
        while parts:
            start, end = parts.pop()
            try:
                self.store.write_requests(self._process_id, batch[start:end])
            except Exception as exc:
                if is_store_away(exc):
                    return done, refused, exc
                if end - start > 1:
                    middle = (start + end) // 2
                    parts += [(middle, end), (start, middle)]  # the first half first
                    continue
                refused.append(exc)
            done = end
        return done, refused, None

    def _refuse(self, errors: Sequence[Exception]) -> None:
        """Count records the store refused as dropped; say why (never what they held)."""
        by_reason: dict[str, int] = {}
        for exc in errors:
            reason = failure_reason(exc)
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, count in by_reason.items():
            self.refused += count
            self._drop(count, f"refused by the store {self.store.url} and dropped ({reason})")

    def _reopened_if_replaced(self) -> bool:
        """Whether the store was replaced under the writer (its file deleted or swapped for
        another); if so it is opened again -- a new file gets the schema -- and this process
        registered in it. ``_connected`` says whether that worked (else it is retried)."""
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
        self._connected = False
        self._process_id = None  # registered again, in the new store
        self._last_routes = frozenset()
        if self._ready(force=True):
            self._sync_if_due(force=True)
        return True

    def _drop(self, count: int, reason: str) -> None:
        """Count records the writer lost as dropped, and report them."""
        self.recorder.count_dropped(count)
        self._dropped_seen += count
        self._losses.add(reason, count)

    def _report_losses(self, *, force: bool = False) -> None:
        """Log the records lost since the last report (rate-limited), with those the request
        threads dropped because the queue was full."""
        dropped = self.recorder.dropped
        if dropped > self._dropped_seen:
            self._losses.add(
                f"dropped because the queue was full (queue_size {self.recorder.queue_size})"
                f" while the store {self.store.url} was slow or failing",
                dropped - self._dropped_seen,
            )
            self._dropped_seen = dropped
        self._losses.report(force=force)

    def _retain_if_due(self) -> None:
        """A few batches of retention, when it is due and this process claimed the run: raw
        rows first, then histograms, each tier with its own cutoff."""
        tiers = (self.retention_days, self.histogram_retention_days)
        if tiers == (None, None) or not self._connected or self._pending:
            return
        now = time.monotonic()
        if self._retention_cutoffs is None and now < self._next_retention:
            return
        try:
            conn = connection_of(self.store)
            if self._retention_cutoffs is None:
                self._next_retention = now + self.retention_interval
                if not claim_retention_run(conn, self.retention_interval):
                    return  # another process ran it within the interval
                wall = time.time()
                self._retention_cutoffs = (
                    None if tiers[0] is None else wall - tiers[0] * 86_400,
                    None if tiers[1] is None else wall - tiers[1] * 86_400,
                )
            rows_cutoff, histograms_cutoff = self._retention_cutoffs
            done = True
            if rows_cutoff is not None:
                pruned = prune(conn, rows_cutoff, max_batches=RETENTION_BATCHES_PER_ROUND)
                self.pruned += pruned.outliers + pruned.requests
                if not pruned.done:
                    done = False
                else:
                    self._retention_cutoffs = (None, histograms_cutoff)
            if done and histograms_cutoff is not None:
                histograms = prune_histograms(
                    conn, histograms_cutoff, max_batches=RETENTION_BATCHES_PER_ROUND
                )
                self.pruned_histograms += histograms.rows
                done = histograms.done
        except Exception as exc:
            self._failed("prune", exc)
            return
        if done:
            self._retention_cutoffs = None
        else:
            self._wake.set()  # more to delete: next round, after whatever was queued

    def _write_profiles_if_due(self, force: bool = False) -> None:
        if self.folder is None or self._failures:
            return
        now = time.monotonic()
        if not force and now < self._next_profiles:
            return
        self._next_profiles = now + self.profile_interval
        if not self._profiles:
            self._profiles = self.folder.drain()
        if not self._profiles:
            return
        assert self._process_id is not None
        try:
            self.store.write_profiles(self._process_id, self._profiles)
        except Exception as exc:
            if is_store_away(exc):
                self._failed("write aggregated profiles to", exc)
                return
            # refused: retrying the same stacks would hold up every later write
            self._losses.add(
                f"of aggregated profiles (stacks) refused by the store {self.store.url} and"
                f" dropped ({failure_reason(exc)})",
                len(self._profiles),
            )
            self._losses.report()
        self._profiles = []

    def _answer_markers(self) -> None:
        ok = not self._pending and self._connected
        for marker in self._markers:
            marker.answer(ok)
        self._markers.clear()

    def _failed(self, action: str, exc: Exception) -> None:
        if not self._failures:
            log.error(
                "flamewatch: cannot %s the store %s: %s; requests keep being served, records"
                " wait in memory (up to %d, then are dropped and counted) while it is retried",
                action,
                self.store.url,
                exc,
                self.recorder.queue_size,
            )
        else:
            log.debug("flamewatch: store still failing (%s): %s", action, exc)
        self._failures += 1
        self._retry_at = time.monotonic() + min(0.5 * 2 ** min(self._failures, 6), 30.0)
        self._connected = False
        self.store.close()  # reopened on the next attempt
        self._shed_excess()
        self._report_losses()

    def _shed_excess(self) -> None:
        """While the store fails, hold at most ``queue_size`` records; count the rest."""
        excess = len(self._pending) - self.recorder.queue_size
        if excess > 0:
            del self._pending[:excess]
            self._drop(
                excess,
                f"dropped: more than queue_size ({self.recorder.queue_size}) waited while the"
                f" store {self.store.url} failed",
            )

    def _shutdown(self) -> None:
        # what a failing store held back in the queue, or came in after the last drain, is
        # lost as well -- and counted
        lost = len(self._pending)
        for item in self.recorder.queue:
            if isinstance(item, FlushMarker):
                self._markers.append(item)
            else:
                lost += 1
        self.recorder.queue.clear()
        self._pending.clear()
        if lost:
            log.error(
                "flamewatch: %d records could not be written to %s and are lost",
                lost,
                self.store.url,
            )
            self.recorder.count_dropped(lost)
            self._dropped_seen += lost  # said just above
        self._report_losses(force=True)
        self._answer_markers()
        if self._connected and self._process_id is not None:
            try:
                self.store.update_process(
                    self._process_id, last_seen=time.time(), dropped=self.recorder.dropped
                )
            except Exception as exc:
                log.debug("flamewatch: final process update failed: %s", exc)
        self.store.close()
        self._connected = False
