"""The interpreter's switch interval, lowered while an outlier is sampled and put back after.

A thread running Python holds the GIL until the interpreter makes it switch, every
``sys.getswitchinterval()`` (5 ms by default). The sampler waiting for the GIL therefore gets a
CPU-bound request every ~5 ms however often it asks: a 60 ms CPU-bound outlier sampled "every
1 ms" got 7-9 samples. While any request is sampled at the high rate, the sampler lowers the
interval to a quarter of that rate (0.25 ms for 1 ms), and puts it back when no request is:
the same outlier then gets ~45 on a quiet machine, about as many as a sleeping one. Only
outliers pay for the extra switches -- and, while one runs, every thread of the process that
competes for the GIL; a request below its threshold, alone, runs at the process's interval.

The setting is process-wide while samplers are per app, so one :class:`SwitchInterval` keeps
the count for the whole process (:data:`SWITCH_INTERVAL`): the first sampler that lowers it
saves what it found, a lower request from another sampler lowers it further, and the last one
done puts the saved value back -- unless somebody else set the interval meanwhile, whose
setting is then left alone (and becomes what is put back if flamewatch lowers it again). A
forked child has none of its parent's samplers: it gets the saved interval back at once.

Only the sampler threads call :meth:`~SwitchInterval.lower` and
:meth:`~SwitchInterval.restore`, never a request thread.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["MIN_INTERVAL_S", "SWITCH_INTERVAL", "SwitchInterval"]

#: never lower than this: below it the interpreter would spend more time switching than running
MIN_INTERVAL_S = 0.000_05


class SwitchInterval:
    """The process's switch interval, held low for as long as any holder asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: float | None = None  # what the process had before flamewatch lowered it
        self._set: float | None = None  # what flamewatch set it to (as the interpreter rounded)

    @property
    def holders(self) -> int:
        """How many samplers hold the interval low now."""
        return self._holders

    def normal_s(self) -> float:
        """The interval the process runs with when no outlier is sampled.

        The profile builder allows a late sample two of these: a request's first samples (all
        of them, below its threshold) wait for the GIL under this interval, not the lowered one.
        """
        with self._lock:
            current = sys.getswitchinterval()
            if self._holders and self._saved is not None and current == self._set:
                return self._saved
            return current

    def lower(self, interval_s: float) -> None:
        """Hold the interval at ``interval_s`` at most (never below :data:`MIN_INTERVAL_S`)."""
        with self._lock:
            current = sys.getswitchinterval()
            if self._holders == 0 or (self._set is not None and current != self._set):
                # the first holder, or somebody else set the interval while it was held:
                # theirs is what goes back in the end
                self._saved, self._set = current, None
            self._holders += 1
            target = max(interval_s, MIN_INTERVAL_S)
            if target < current:
                sys.setswitchinterval(target)
                self._set = sys.getswitchinterval()

    def restore(self) -> None:
        """Release one hold; the last one puts the saved interval back."""
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0:
                self._put_back()

    def _put_back(self) -> None:
        saved, lowered = self._saved, self._set
        self._saved = self._set = None
        if saved is not None and lowered is not None and sys.getswitchinterval() == lowered:
            sys.setswitchinterval(saved)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's samplers are gone, and so are their holds."""
        self._lock = threading.Lock()  # it may have been held by a sampler at fork time
        if self._holders:
            self._holders = 0
            self._put_back()


#: the one keeper of the switch interval in the process
SWITCH_INTERVAL = SwitchInterval()
os.register_at_fork(after_in_child=SWITCH_INTERVAL.reset_after_fork)
