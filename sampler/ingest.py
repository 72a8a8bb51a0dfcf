"""The writer's ingest: from the request queue to stored requests and latency histograms.

:meth:`Ingest.drain` moves what the request threads queued into a pending batch, feeding each
endpoint's statistics (:mod:`.thresholds`) and capturing outliers within the quota
(:mod:`.capture_quota`); :meth:`Ingest.write_pending` writes the batch in parts of
:data:`BATCH_SIZE` (the store adds each part's histograms in the same transaction). A store
that fails keeps the records waiting, up to the queue's cap (the rest are counted as dropped);
a part the store *refuses* (a value it cannot take; :mod:`.store.failures` tells the two apart)
is split until every record it can take is written, and the records it refused are counted as
dropped. Every record lost is logged, with its count and why, at most once a minute per
reason (:class:`Losses`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import cast

from .capture_quota import CaptureQuota
from .logs import LossReport
from .maintenance import StoreLink
from .recorder import FlushMarker, Recorder
from .store import RequestFields, RequestRecord
from .store.failures import failure_reason, is_store_away
from .thresholds import Thresholds

__all__ = ["BATCH_SIZE", "Ingest", "Losses"]

BATCH_SIZE = 5000


class Losses:
    """The records the writer lost, counted as dropped in the recorder and reported (rate-
    limited) with those the request threads dropped because the queue was full."""

    def __init__(self, recorder: Recorder, store_url: str) -> None:
        self.recorder = recorder
        self.store_url = store_url
        self.report = LossReport()
        self._dropped_seen = 0  # of the recorder's dropped count, what ``report`` was told

    def drop(self, count: int, reason: str) -> None:
        """Count records the writer lost as dropped, and report them."""
        self.recorder.count_dropped(count)
        self._dropped_seen += count
        self.report.add(reason, count)

    def lost_at_exit(self, count: int) -> None:
        """Count records lost at shutdown as dropped (their loss was logged already)."""
        self.recorder.count_dropped(count)
        self._dropped_seen += count

    def log(self, *, force: bool = False) -> None:
        """Log the records lost since the last report (rate-limited), with those the request
        threads dropped because the queue was full."""
        dropped = self.recorder.dropped
        if dropped > self._dropped_seen:
            self.report.add(
                f"dropped because the queue was full (queue_size {self.recorder.queue_size})"
                f" while the store {self.store_url} was slow or failing",
                dropped - self._dropped_seen,
            )
            self._dropped_seen = dropped
        self.report.report(force=force)


class Ingest:
    """The queue drained into a pending batch, and the batch written to the store.

    ``reopened_if_replaced`` asks the writer whether the store was replaced under it (and if
    so to open the new one): it is checked before and after each part written.
    """

    def __init__(
        self,
        link: StoreLink,
        recorder: Recorder,
        thresholds: Thresholds,
        captures: CaptureQuota | None,
        losses: Losses,
        reopened_if_replaced: Callable[[], bool],
    ) -> None:
        self.link = link
        self.recorder = recorder
        self.thresholds = thresholds
        self.captures = captures
        self.losses = losses
        self.reopened_if_replaced = reopened_if_replaced
        #: records drained but not written yet (only ever changed in place)
        self.pending: list[RequestFields] = []
        #: flushes waiting for an answer
        self.markers: list[FlushMarker] = []
        self.written = 0
        self.refused = 0  # records the store refused (counted as dropped too)

    def drain(self) -> bool:
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
        # 64-bit integer takes. The records are taken in rounds of what the queue holds
        # when the round starts (while the store fails, of what still fits), by a ``for``
        # over that count with the queue's and the batch's bound methods, and a flush marker is
        # told apart by its type: ~4,100 CPU instructions a record where a ``while`` testing
        # the queue and ``isinstance`` cost ~7,100 (counted with callgrind).
        queue, pending, cap = self.recorder.queue, self.pending, self.recorder.queue_size
        captures, link = self.captures, self.link
        take, keep = queue.popleft, pending.append
        durations: dict[str, list[float]] = {}
        taken = 0
        base_ns, base_s = time.perf_counter_ns(), time.time()
        while True:
            room = len(queue)
            if link.failures:
                room = min(room, cap - len(pending))
            if room <= 0:
                break
            for _ in range(room):
                item = take()
                if type(item) is not tuple:
                    self.markers.append(cast(FlushMarker, item))
                    continue
                taken += 1
                # the layout of flamewatch.sampler.inflight
                (endpoint, rule, method, status, t0, duration_ns, group, client_ip,
                 threshold_ns, outlier, _, _, _, _, _) = item  # fmt: skip
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
                if outlier and captures is not None:
                    record = captures.outlier(RequestRecord._make(record), item)
                keep(record)
                found = durations.get(endpoint)
                if found is None:
                    durations[endpoint] = [duration]
                else:
                    found.append(duration)
        self.recorder.drained += taken
        self.thresholds.update(durations)
        return bool(queue) and bool(link.failures)

    def write_pending(self) -> None:
        """Write the pending batch, part by part, until it is empty or the store fails."""
        link = self.link
        if self.reopened_if_replaced() and not link.connected:
            return
        while self.pending:
            batch = self.pending[:BATCH_SIZE]
            done, refused, away = self._write_batch(batch)
            if away is None and self.reopened_if_replaced():
                if not link.connected:
                    return  # the batch waits for the store to open again
                continue  # it went to a file that is gone: write it again, to the new one
            del self.pending[:done]
            self.written += done - len(refused)
            self._refuse(refused)
            if away is not None:
                link.failed("write to", away)
                return
        link.recovered()
        self.losses.log()

    def _write_batch(
        self, batch: Sequence[RequestFields]
    ) -> tuple[int, list[Exception], Exception | None]:
        """Write a batch, halving the parts the store refuses down to single records.

        Parts are written in order, so what is handled is always the batch's first records.
        Returns how many those are (written or refused), the error of each record refused,
        and the error of a store found away (the rest of the batch waits for it). A batch
        with ``k`` bad records among ``n`` costs about ``2 k log2(n)`` writes.
        """
        store, process_id = self.link.store, self.link.process_id
        assert process_id is not None
        refused: list[Exception] = []
        parts = [(0, len(batch))]
        done = 0
        while parts:
            start, end = parts.pop()
            try:
                store.write_requests(process_id, batch[start:end])
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
        url = self.link.store.url
        for reason, count in by_reason.items():
            self.refused += count
            self.losses.drop(count, f"refused by the store {url} and dropped ({reason})")

    def shed_excess(self) -> None:
        """While the store fails, hold at most ``queue_size`` records; count the rest."""
        excess = len(self.pending) - self.recorder.queue_size
        if excess > 0:
            del self.pending[:excess]
            self.losses.drop(
                excess,
                f"dropped: more than queue_size ({self.recorder.queue_size}) waited while the"
                f" store {self.link.store.url} failed",
            )

    def answer_markers(self) -> None:
        """Answer the waiting flushes: whether everything before them was written."""
        ok = not self.pending and self.link.connected
        for marker in self.markers:
            marker.answer(ok)
        self.markers.clear()

    def discard(self) -> int:
        """At shutdown: empty the pending batch and the queue (taking the flushes waiting in
        it); return how many records that loses."""
        lost = len(self.pending)
        for item in self.recorder.queue:
            if isinstance(item, FlushMarker):
                self.markers.append(item)
            else:
                lost += 1
        self.recorder.queue.clear()
        self.pending.clear()
        return lost
