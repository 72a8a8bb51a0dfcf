"""The capture quota: at most ``captures_per_hour`` outliers of an endpoint keep a profile.

An outlier's capture (its profile, facts and load) is the bulky and slow part of what the
writer stores. Per endpoint and UTC hour, the first ``captures_per_hour`` outliers are captured;
past the quota the endpoint is named in :attr:`Recorder.capped`, so that the sampler does not
sample its requests at the outlier rate until the next hour, and its outliers are stored as
timings only.
"""

from __future__ import annotations

from .capture import Capturer
from .inflight import DURATION, T0, Queued
from .logs import log_swallowed
from .recorder import Recorder
from .store import ProcessInfo, RequestRecord

__all__ = ["CaptureQuota"]


class CaptureQuota:
    """Captures outliers through a :class:`Capturer`, within the hourly quota per endpoint."""

    def __init__(
        self,
        capturer: Capturer,
        recorder: Recorder,
        process: ProcessInfo,
        captures_per_hour: int,
    ) -> None:
        self.capturer = capturer
        self.recorder = recorder
        self.process = process
        self.captures_per_hour = captures_per_hour
        self.captured = 0
        self._counts: dict[str, tuple[int, int]] = {}  # endpoint -> (hour, count)

    def outlier(self, record: RequestRecord, raw: Queued) -> RequestRecord:
        """An outlier's record, with its capture when the hourly quota allows one."""
        return self._capture(record, raw) if self._may_capture(record) else record

    def _may_capture(self, record: RequestRecord) -> bool:
        """At most ``captures_per_hour`` captures per endpoint (this process's version)."""
        hour = int(record.started_at // 3600)
        last_hour, count = self._counts.get(record.endpoint, (hour, 0))
        if last_hour != hour:
            count = 0
            self.recorder.capped.discard(record.endpoint)
        if count >= self.captures_per_hour:
            return False
        count += 1
        self._counts[record.endpoint] = (hour, count)
        if count >= self.captures_per_hour:
            self.recorder.capped.add(record.endpoint)  # the sampler skips it until next hour
        return True

    def _capture(self, record: RequestRecord, raw: Queued) -> RequestRecord:
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
