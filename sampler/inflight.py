"""The one object a monitored request costs: a plain list, shared by every thread that sees it.

The request thread builds it with a single list display (no constructor call, no attribute
stores), registers it in the recorder's ``inflight`` dict for the stack sampler, fills in the
status, group and duration, and queues it for the writer as a tuple (:data:`Queued`): a tuple
of strings, numbers and None is dropped from the garbage collector's lists at its first pass,
while a list in the queue would be traversed by every collection until the writer takes it.
Fields are read and written by index, through the names below. Together with inlining the
recorder's calls into the Flask hooks, this took the request path from ~283 to ~214 Python
bytecodes and from ~15,800 to ~14,000 CPU instructions per request
(``benchmarks/bench_instructions.py``).

The sampler's state for a request (:class:`Sampling`) is created by the sampler itself, on its
own thread, the first time it samples the request: requests that end before it comes by --
almost all of them -- never get one.

Layout (``rec[NAME]``):

=============  =========================================================================
``ENDPOINT``   the endpoint name (str)
``RULE``       the URL rule (str or None)
``METHOD``     the HTTP method (str)
``STATUS``     the status code (int; 500 until the app answers otherwise)
``T0``         the start, ``perf_counter_ns``
``DURATION``   ns, set when the request ends
``GROUP``      what ``group_by`` returned (None: the client address stands for it)
``CLIENT_IP``  the client address (str or None)
``THRESHOLD``  the endpoint's outlier threshold in ns when the request began, or None
``OUTLIER``    whether the request was slower than ``THRESHOLD`` (set when it ends)
``THREAD``     the id of the thread serving it
``REQUEST``    the framework's request object -- kept in the queue for outliers only
``PARAMS``     request facts taken on the request thread (an outlier's body), or None
``STREAMED``   whether the body is streamed after the app returned
``SAMPLING``   the sampler's :class:`Sampling`, or None while it has not sampled the request
=============  =========================================================================
"""

from __future__ import annotations

from types import CodeType
from typing import Any, Final

__all__ = [
    "CLIENT_IP",
    "DURATION",
    "ENDPOINT",
    "FIELDS",
    "GROUP",
    "METHOD",
    "OUTLIER",
    "PARAMS",
    "REQUEST",
    "RULE",
    "SAMPLING",
    "STATUS",
    "STREAMED",
    "T0",
    "THREAD",
    "THRESHOLD",
    "Queued",
    "Record",
    "Sample",
    "Sampling",
    "Stack",
    "new_record",
]

ENDPOINT: Final = 0
RULE: Final = 1
METHOD: Final = 2
STATUS: Final = 3
T0: Final = 4
DURATION: Final = 5
GROUP: Final = 6
CLIENT_IP: Final = 7
THRESHOLD: Final = 8
OUTLIER: Final = 9
THREAD: Final = 10
REQUEST: Final = 11
PARAMS: Final = 12
STREAMED: Final = 13
SAMPLING: Final = 14
FIELDS: Final = 15

#: a request in flight; see the module's docstring for its layout
Record = list[Any]
#: a finished request in the writer's queue: the record as a tuple
Queued = tuple[Any, ...]

Stack = tuple[tuple[CodeType, int], ...]  # root first
#: (taken at, perf_counter ns; the interval that was due, ns; the stack)
Sample = tuple[int, int, Stack]


class Sampling:
    """What the stack sampler knows of one request it samples (made on the sampler's thread)."""

    __slots__ = ("crossed", "interval_ns", "next_due", "samples")

    def __init__(self, samples: list[Sample] | None, interval_ns: int, next_due: int) -> None:
        #: the request's samples, or None when only the aggregated profiles want them (the
        #: endpoint's outlier captures reached their hourly cap)
        self.samples = samples
        self.crossed: Stack | None = None  # the stack when the threshold was crossed
        self.interval_ns = interval_ns
        self.next_due = next_due


def new_record(
    endpoint: str,
    rule: str | None,
    t0: int,
    thread_id: int,
    threshold_ns: int | None,
    *,
    method: str = "GET",
    client_ip: str | None = None,
) -> Record:
    """A record as the request thread builds it (for code off the hot path: tests, benchmarks)."""
    return [
        endpoint,
        rule,
        method,
        500,
        t0,
        0,
        None,
        client_ip,
        threshold_ns,
        False,
        thread_id,
        None,
        None,
        False,
        None,
    ]
