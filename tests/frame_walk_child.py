"""Run as a script: a garbage collection inside the sampler's frame walk, at the worst moment.

The sampled thread waits three calls deep. The sampler samples it with the collector's
threshold at 1, so every allocation of a tracked object collects; the garbage's finalizer lets
the sampled thread run to its end (and its frames be freed) only when the collection runs inside
the walk's read of ``f_back`` -- where, on CPython 3.11, the read creates the frame object of
the frame below. Elsewhere it leaves fresh garbage for the next collection. Before the walk
paused the collector, this process died with SIGSEGV every time; now it must print the stack.
"""

from __future__ import annotations

import dis
import gc
import sys
import threading
import time
from time import perf_counter_ns
from types import FrameType

from flamewatch.sampler.inflight import SAMPLING, new_record
from flamewatch.sampler.stack_sampler import StackSampler

go = threading.Event()
waiting = threading.Event()
armed = True


def inner() -> None:
    waiting.set()
    go.wait()


def middle() -> None:
    inner()


def outer() -> None:
    middle()


def inside_frame_walk(frame: FrameType) -> bool:
    """Whether ``frame`` is the sampler's walk reading another frame's ``f_back``."""
    if frame.f_code.co_name != "walk_stack":
        return False
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset == frame.f_lasti:
            return instruction.opname == "LOAD_ATTR" and instruction.argval == "f_back"
    return False


class Garbage:
    """A reference cycle (freed by the collector only) whose finalizer ends the sampled thread."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        if not armed:
            return
        if not inside_frame_walk(sys._getframe(1)):
            Garbage()  # not this collection: garbage again for the next one
            return
        go.set()
        thread.join()
        time.sleep(0.05)  # the thread's frames are freed as its state is deleted


thread = threading.Thread(target=outer)


def main() -> int:
    global armed
    thread.start()
    waiting.wait()
    time.sleep(0.05)  # into Event.wait, holding no frame object below its top
    sampler = StackSampler({}, interval_s=0.01)
    assert thread.ident is not None
    record = new_record("slow", "/slow", perf_counter_ns() - 10**9, thread.ident, 5 * 10**6)
    sampler.inflight[thread.ident] = record
    gc.collect()
    Garbage()
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        sampler.sample_due(perf_counter_ns())
    finally:
        armed = False
        gc.set_threshold(*threshold)
        go.set()
        thread.join()
    state = record[SAMPLING]
    samples = [] if state is None or state.samples is None else state.samples
    print(" ".join(code.co_name for _, _, stack in samples for code, _ in stack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
