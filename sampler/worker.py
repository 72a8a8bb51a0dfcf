"""The life cycle shared by flamewatch's background threads (the writer, the sampler)."""

from __future__ import annotations

import abc
import threading

from .logs import log

__all__ = ["Worker"]


class Worker(abc.ABC):
    """A daemon thread running :meth:`_run` until :meth:`stop`; woken through ``_wake``.

    :meth:`_run` checks ``_stopping`` and waits on ``_wake`` between rounds.
    """

    thread_name = "flamewatch-worker"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.alive:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Ask the thread to finish its round and end; True if it ended within ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "flamewatch: the %s thread did not stop within %s s", self.thread_name, timeout
            )
            return False
        self._thread = None
        return True

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread's body."""
