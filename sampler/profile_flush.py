"""The writer's aggregated profiles: what the sampler folded, added to the store periodically.

Every ``profile_interval`` seconds (and on a flush or at exit) the stacks the sampler folded
(:class:`~.folding.StackFolder`) are taken and added to the aggregated profiles of the process's
version. Stacks the store could not take because it failed wait for the next round (while they
wait, the folder keeps folding into its own bounded tables); stacks it *refused* are dropped
and counted, since retrying them would hold up every later write.
"""

from __future__ import annotations

import time

from .folding import StackFolder
from .logs import LossReport
from .maintenance import StoreLink
from .store import ProfileStack
from .store.failures import failure_reason, is_store_away

__all__ = ["ProfileFlush"]


class ProfileFlush:
    """Writes a :class:`StackFolder`'s stacks to the store every ``interval`` seconds."""

    def __init__(
        self, link: StoreLink, folder: StackFolder, interval: float, losses: LossReport
    ) -> None:
        self.link = link
        self.folder = folder
        self.interval = interval
        self.losses = losses
        self._next_flush = time.monotonic() + interval
        #: folded stacks taken from the folder but not written yet (the store failed)
        self._stacks: list[ProfileStack] = []

    def write_if_due(self, force: bool = False) -> None:
        link = self.link
        if link.failures:
            return
        now = time.monotonic()
        if not force and now < self._next_flush:
            return
        self._next_flush = now + self.interval
        if not self._stacks:
            self._stacks = self.folder.drain()
        if not self._stacks:
            return
        assert link.process_id is not None
        try:
            link.store.write_profiles(link.process_id, self._stacks)
        except Exception as exc:
            if is_store_away(exc):
                link.failed("write aggregated profiles to", exc)
                return
            # refused: retrying the same stacks would hold up every later write
            self.losses.add(
                f"of aggregated profiles (stacks) refused by the store {link.store.url} and"
                f" dropped ({failure_reason(exc)})",
                len(self._stacks),
            )
            self.losses.report()
        self._stacks = []
