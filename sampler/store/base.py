"""The store interface: what the agent writes and reads back, whatever the database.

The writer thread is the only caller on the agent side; backends (SQLite here, PostgreSQL
later) implement :class:`Store`. Nothing in here knows about Flask.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "Baseline",
    "FrameKey",
    "OutlierCapture",
    "ProcessInfo",
    "ProfileStack",
    "Pruned",
    "PrunedHistograms",
    "RequestFields",
    "RequestRecord",
    "RouteInfo",
    "Store",
    "StoreError",
]


class StoreError(Exception):
    """The store cannot be opened, read or written (bad URL, unwritable path, schema too new)."""


@dataclass(frozen=True)
class OutlierCapture:
    """What is kept of an outlier besides its timing: facts, load, and its profile."""

    request: dict[str, Any]  # method, path, redacted params and headers, ...
    resources: dict[str, Any]  # CPU load, memory, load average, threads
    threshold_stack: list[str] | None  # frame identifiers, root first, when it crossed
    profile: bytes | None  # gzip-compressed pyinstrument session JSON (.pyisession)
    sample_count: int
    note: str | None = None  # why there is no profile, or what was left out


class RequestRecord(NamedTuple):
    """One finished request, as the writer hands it to the store."""

    endpoint: str
    rule: str | None
    method: str
    status: int
    started_at: float  # Unix time (UTC) when the request arrived
    duration_ms: float
    group: str | None  # the user or group; the client address when the app gives none
    client_ip: str | None
    is_outlier: bool
    threshold_ms: float | None  # the threshold in force; None while the endpoint warmed up
    capture: OutlierCapture | None = None


#: a :class:`RequestRecord`'s fields as a plain tuple, in its order: what the writer hands
#: the store (building the named tuple would cost a call per request on the writer thread)
RequestFields = tuple[
    str,
    str | None,
    str,
    int,
    float,
    float,
    str | None,
    str | None,
    bool,
    float | None,
    OutlierCapture | None,
]

#: a function in an aggregated profile: (qualified name, file, first line)
FrameKey = tuple[str, str, int]


class ProfileStack(NamedTuple):
    """Time spent in one distinct stack by one endpoint's requests (of one group), to add to
    the aggregated profile of the writing process's version."""

    endpoint: str
    group: str  # "" for requests without a group; a catch-all name past the groups' cap
    frames: tuple[FrameKey, ...]  # root (the request's entry) first
    samples: int
    time_ms: float


class RouteInfo(NamedTuple):
    """An endpoint's URL rule as found in the app's URL map."""

    endpoint: str
    rule: str
    methods: tuple[str, ...]


class Baseline(NamedTuple):
    """Statistics of an endpoint's recent normal durations, to seed the outlier rule."""

    samples: int
    mean_ms: float
    variance: float
    #: the earlier version these statistics are from, when the version asked for has no
    #: requests of the endpoint yet (a prior for a new deploy); None: the version's own
    prior_version: str | None = None


@dataclass(frozen=True)
class ProcessInfo:
    """Who is writing: one row per process start."""

    hostname: str
    pid: int
    version: str
    version_source: str
    started_at: float
    agent: str  # e.g. "flamewatch 0.1.0 / Python 3.11.7"


@dataclass
class Pruned:
    """What a prune deleted, and whether rows older than the cutoff remain."""

    outliers: int = 0
    requests: int = 0
    batches: int = 0
    done: bool = True


@dataclass
class PrunedHistograms:
    """What a prune of the histograms deleted, and whether some older than the cutoff remain."""

    hours: int = 0  # hours whose hourly histograms and traffic counts were deleted
    versions: int = 0  # (endpoint, version) pairs whose all-time histograms were deleted
    rows: int = 0
    batches: int = 0
    done: bool = True


class Store(abc.ABC):
    """A place where requests are written in batches and read back by the report.

    Every method may raise :class:`StoreError` (or the driver's own error, which the writer
    treats alike). Implementations are used from one thread at a time.
    """

    url: str

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, create the schema or migrate it to the current version."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; idempotent."""

    @abc.abstractmethod
    def register_process(self, process: ProcessInfo) -> int:
        """Record a process start (and its version); return the process id."""

    @abc.abstractmethod
    def write_requests(self, process_id: int, records: Sequence[RequestFields]) -> None:
        """Insert a batch of requests (:class:`RequestRecord` or plain tuples of its fields)
        in one transaction, with what they add to the latency histograms: all or nothing."""

    @abc.abstractmethod
    def record_routes(
        self, routes: Sequence[RouteInfo], monitored_default: Callable[[str], bool], now: float
    ) -> None:
        """Insert or refresh endpoints and rules seen in the URL map."""

    @abc.abstractmethod
    def monitor_flags(self) -> dict[str, bool]:
        """Endpoint name -> whether it is monitored, as stored."""

    @abc.abstractmethod
    def set_monitored(self, endpoint: str, monitored: bool) -> None:
        """Turn monitoring of one endpoint on or off (creates the endpoint if unknown)."""

    @abc.abstractmethod
    def update_process(self, process_id: int, *, last_seen: float, dropped: int) -> None:
        """Refresh a process's heartbeat and its count of dropped records."""

    @abc.abstractmethod
    def baselines(self, version: str, window: int) -> dict[str, Baseline]:
        """Per endpoint, statistics of the last ``window`` normal requests of ``version``;
        for an endpoint ``version`` has none of, those of the latest version deployed before
        it that has some (``Baseline.prior_version`` says which)."""

    def replaced(self) -> str | None:
        """Why the open connection no longer writes to the store the URL names (its file was
        deleted or replaced), or None. Cheap: the writer asks before and after each batch."""
        return None

    def forget(self) -> None:
        """Drop what is cached of the store's contents (ids): the store was replaced."""
        return

    @abc.abstractmethod
    def write_profiles(self, process_id: int, stacks: Sequence[ProfileStack]) -> None:
        """Add folded stacks to the aggregated profiles of the process's version, in one
        transaction: samples and time of a stack already stored are summed."""

    # -- retention (:mod:`.retention` says how) ------------------------------------------------

    @abc.abstractmethod
    def claim_retention_run(self, every: float) -> bool:
        """Whether this process should run retention now: at most one process per ``every``
        seconds, whatever the number of processes sharing the store."""

    @abc.abstractmethod
    def prune(
        self, cutoff: float, *, profiles_only: bool = False, max_batches: int | None = None
    ) -> Pruned:
        """Delete outliers (and, unless ``profiles_only``, requests) that started before
        ``cutoff`` (Unix time), in short transactions; stop after ``max_batches`` of them."""

    @abc.abstractmethod
    def prune_histograms(
        self, cutoff: float, *, max_batches: int | None = None
    ) -> PrunedHistograms:
        """Delete the histograms older than ``cutoff`` (Unix time), in short transactions;
        stop after ``max_batches`` of them."""
