"""Turning an outlier's raw samples into a pyinstrument :class:`~pyinstrument.session.Session`.

Runs on the writer thread, never on the request thread. Frames are named as pyinstrument names
them (see :mod:`flamewatch.sampler.frame_ids`), so its renderers and ``pyinstrument --load``
work on the result unchanged.

Time weights: the time between two samples is split at its midpoint between their stacks; the
first sample also takes the time since the request's start, the last the time to its end. This
holds whatever rate was in force, and sparse samples of a thread holding the GIL err on both
sides rather than all on the later one.

Samples can come late: a thread running Python only lets the sampler in when the GIL switches,
and C code holding the GIL lets nobody in. So a gap is credited at most the interval that was
due plus ``slack`` -- unless both samples found the thread in the same functions, which brackets
the gap -- and the rest goes to an ``[unsampled]`` frame under the request's entry instead of
being silently charged to whatever stack came next. The slack is two of the process's own
switch intervals (:meth:`.switching.SwitchInterval.normal_s`), not the interval in force when
the profile is built: the sampler lowers it while another outlier is sampled, and a slack of
2 x 0.25 ms put 4-5 % of every CPU-bound outlier, its late first sample (taken below the
threshold, under the 5 ms interval), on ``[unsampled]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import CodeType

from pyinstrument.session import Session

from .frame_ids import UNSAMPLED, frame_identifier, thread_root
from .inflight import Sample, Stack
from .switching import SWITCH_INTERVAL

__all__ = ["build_session", "stack_identifiers"]


def stack_identifiers(stack: Stack) -> list[str]:
    """Root-first identifiers of a sampled stack."""
    return [frame_identifier(code, line) for code, line in stack]


def build_session(
    samples: Sequence[Sample],
    *,
    t0_ns: int,
    end_ns: int,
    start_time: float,
    thread_name: str,
    thread_id: int,
    description: str,
    min_interval_s: float,
    max_interval_s: float,
    cpu_time: float = 0.0,
    slack_ns: int | None = None,
    entry_code: CodeType | None = None,
) -> Session:
    """A session covering ``t0_ns`` .. ``end_ns`` (``perf_counter_ns`` values) of one request.

    ``entry_code`` is the code of the function where the request starts (the WSGI middleware);
    pyinstrument's renderers then show the tree from there, without the server's frames above.
    """
    if slack_ns is None:
        slack_ns = int(2 * SWITCH_INTERVAL.normal_s() * 1e9)
    root = thread_root(thread_name, thread_id)
    records: list[tuple[list[str], float]] = []
    ids_of: dict[int, list[str]] = {}  # id(stack) -> identifiers; stacks are shared tuples

    def charge(stack: list[str], ns: int) -> None:
        if ns <= 0:
            return
        if records and records[-1][0] is stack:
            records[-1] = (stack, records[-1][1] + ns / 1e9)
        else:
            records.append((stack, ns / 1e9))

    chains: dict[int, tuple[CodeType, ...]] = {}  # id(stack) -> its functions, without lines
    start_stack = _start_stack(root, samples, entry_code)
    unsampled = [*start_stack, UNSAMPLED]  # under the request's entry, so the stem still trims
    previous = t0_ns
    last_stack: list[str] | None = None
    last_chain: tuple[CodeType, ...] | None = None
    last_interval = 0
    for taken_at, interval, stack in samples:
        if taken_at > end_ns:
            break
        identifiers = ids_of.get(id(stack))
        if identifiers is None:
            identifiers = ids_of[id(stack)] = [root, *stack_identifiers(stack)]
            chains[id(stack)] = tuple(code for code, _ in stack)
        chain = chains[id(stack)]
        delta = taken_at - max(previous, t0_ns)
        if last_stack is None:  # the first sample: since the request's start
            allowed = interval + slack_ns
            charge(unsampled, delta - allowed)
            charge(identifiers, min(delta, allowed))
        else:
            # a late sample in the same functions as the one before: the thread was there all
            # along; otherwise what is beyond the allowance is unknown
            allowed = min(delta, delta if chain == last_chain else interval + slack_ns)
            charge(last_stack, allowed // 2)  # split at the midpoint between the two samples
            charge(unsampled, delta - allowed)
            charge(identifiers, allowed - allowed // 2)
        previous, last_stack, last_chain, last_interval = taken_at, identifiers, chain, interval
    tail = end_ns - max(previous, t0_ns)
    if last_stack is not None:
        # the request went on after the last sample, in the same code for at most one interval:
        # had it waited (GIL released), the sampler would have come back by then
        allowed = min(tail, last_interval)
        charge(last_stack, allowed)
        tail -= allowed
    charge(unsampled, tail)
    return Session(
        frame_records=records,
        start_time=start_time,
        duration=(end_ns - t0_ns) / 1e9,
        min_interval=min_interval_s,
        max_interval=max_interval_s,
        sample_count=len(samples),
        start_call_stack=start_stack,
        target_description=description,
        cpu_time=cpu_time,
        sys_path=list(sys.path),
        sys_prefixes=Session.current_sys_prefixes(),
    )


def _start_stack(root: str, samples: Sequence[Sample], entry_code: CodeType | None) -> list[str]:
    if entry_code is None or not samples:
        return [root]
    stack = samples[0][2]
    for depth, (code, _) in enumerate(stack):
        if code is entry_code:
            return [root, *stack_identifiers(stack[: depth + 1])]
    return [root]
