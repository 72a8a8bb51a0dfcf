"""Rate-limited logging for code that runs on every request."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["LossReport", "log", "log_swallowed"]

log = logging.getLogger("flamewatch")

_INTERVAL_S = 60.0
_last_logged: dict[str, float] = {}
_suppressed: dict[str, int] = {}
_lock = threading.Lock()


def log_swallowed(what: str) -> None:
    """Log the exception being handled, at most once a minute per ``what``.

    For failures inside flamewatch that happen on a request thread: the app's response must
    not change, and a broken agent must not flood the log once per request either.
    """
    now = time.monotonic()
    with _lock:
        last = _last_logged.get(what)
        if last is not None and now - last < _INTERVAL_S:
            _suppressed[what] = _suppressed.get(what, 0) + 1
            return
        _last_logged[what] = now
        suppressed = _suppressed.pop(what, 0)
    more = f" ({suppressed} more since the last report)" if suppressed else ""
    log.exception("flamewatch: %s failed%s; the request was served unchanged", what, more)


class LossReport:
    """Records lost, counted by reason and logged at most once per interval (the first loss
    at once): every loss is said, with its count, and a flood of them makes a line a minute.

    Used by one thread (the writer's).
    """

    def __init__(self, interval_s: float = _INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._counts: dict[str, int] = {}
        self._next_report = 0.0

    def add(self, reason: str, count: int) -> None:
        """Count ``count`` records lost for ``reason`` (words that carry no record's content)."""
        if count > 0:
            self._counts[reason] = self._counts.get(reason, 0) + count

    def report(self, *, force: bool = False) -> None:
        """Log what was counted since the last report, if the interval has passed (or now)."""
        now = time.monotonic()
        if not self._counts or (not force and now < self._next_report):
            return
        self._next_report = now + self.interval_s
        counts, self._counts = self._counts, {}
        for reason, count in counts.items():
            noun = "record" if count == 1 else "records"
            log.warning("flamewatch: %d %s %s", count, noun, reason)
