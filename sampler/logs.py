"""Rate-limited logging for code that runs on every request."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["log", "log_swallowed"]

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
