"""Work another thread hands to the writer thread, to be done with the writer's own store link.

A process has one connection to its store: the writer's (:class:`~.maintenance.StoreLink`). A
thread that must write something else -- the dashboard switching an endpoint's monitor flag --
does not open a second store for it: it submits a :class:`StoreCommand`, which the writer
thread runs between two batches (at once: a command wakes it) and answers. Running there also
puts the command in order with the writer's own reads and writes: the route sync that publishes
the stored monitor flags to the recorder runs before or after a switch, never during one.

A command that fails is answered with its exception, and the link is treated as failed (closed
and opened again): a database error may have left the connection unusable. A command that is
cancelled before the writer took it (its caller gave up waiting) is never run.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .maintenance import StoreLink
from .store import Store, StoreError

__all__ = ["StoreCommand", "StoreCommands"]

T = TypeVar("T")


class StoreCommand(Generic[T]):
    """One piece of work on the store and its answer: a result, or the exception it raised."""

    def __init__(self, action: Callable[[Store], T]) -> None:
        self.action = action
        self.done = threading.Event()
        self._result: tuple[T] | None = None  # (what the action returned,) once it did
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "running" (taken by the writer) or "cancelled"

    def cancel(self) -> bool:
        """Withdraw the command unless the writer has taken it; True if it will never run."""
        with self._lock:
            if self._state == "waiting":
                self._state = "cancelled"
                return True
            return self._state == "cancelled"

    def take(self) -> bool:
        """The writer takes the command to run it; False if its caller withdrew it."""
        with self._lock:
            if self._state != "waiting":
                return False
            self._state = "running"
            return True

    def answer(self, result: T) -> None:
        self._result = (result,)
        self.done.set()

    def fail(self, error: Exception) -> None:
        self._error = error
        self.done.set()

    def result(self) -> T:
        """What the action returned; raises what it raised (call once :attr:`done` is set)."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise RuntimeError("the command has not been answered yet")
        return self._result[0]


class StoreCommands:
    """The commands waiting for the writer thread, first come first run."""

    def __init__(self, link: StoreLink) -> None:
        self.link = link
        self._waiting: collections.deque[StoreCommand[Any]] = collections.deque()

    @property
    def pending(self) -> bool:
        return bool(self._waiting)

    def submit(self, action: Callable[[Store], T]) -> StoreCommand[T]:
        """Queue ``action`` for the writer thread (from any thread; deque appends are atomic).
        The caller wakes the writer and waits on the command's :attr:`~StoreCommand.done`."""
        command = StoreCommand(action)
        self._waiting.append(command)
        return command

    def run_pending(self) -> None:
        """Run the waiting commands with the link's store (on the writer thread, connected)."""
        while self._waiting:
            command = self._waiting.popleft()
            if not command.take():
                continue
            if not self.link.connected:  # an earlier command broke the link
                command.fail(StoreError(self._unreachable()))
                continue
            try:
                result = command.action(self.link.store)
            except Exception as exc:
                self.link.failed("run a command on", exc)
                command.fail(exc)
            else:
                command.answer(result)

    def refuse_pending(self, why: str | None = None) -> None:
        """Answer every waiting command with a :class:`StoreError`: the store cannot be opened
        now, or the writer is stopping."""
        while self._waiting:
            command = self._waiting.popleft()
            if command.take():
                command.fail(StoreError(why or self._unreachable()))

    def _unreachable(self) -> str:
        return f"the store {self.link.store.url} cannot be reached now (the log says why)"
