"""Assembling an outlier's capture on the writer thread: facts, load, profile.

The request thread leaves the outlier's record (:mod:`.inflight`) in the queue, with the request
facts it could cheaply take (``PARAMS``) or the request object to take them from here, and the
stack sampler's :class:`~.inflight.Sampling` of it when the sampler came by.
This module redacts those facts, reads CPU and memory, turns the samples into a pyinstrument
session, compresses it, and keeps it under the size cap -- all off the request thread.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

import orjson

from .inflight import PARAMS, REQUEST, RULE, SAMPLING, T0, THREAD, Sampling
from .profile_builder import build_session, stack_identifiers
from .redact import Redactor
from .resources import ResourceMonitor
from .stack_sampler import thin
from .store import OutlierCapture

__all__ = ["CaptureSettings", "Capturer"]

_UNREACHED = "no sample: the request ended before the sampler came by"

#: takes the framework's request object and whether its body may be read; returns raw facts
Describe = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class CaptureSettings:
    redact_keys: tuple[str, ...] = ()
    headers: Collection[str] = ()
    max_profile_bytes: int = 1024 * 1024
    low_interval_s: float = 0.01
    high_interval_s: float = 0.001


class Capturer:
    """Builds :class:`OutlierCapture` objects for the writer."""

    def __init__(
        self,
        settings: CaptureSettings,
        resources: ResourceMonitor | None,
        describe: Describe | None,
        entry_code: CodeType | None = None,
        *,
        sampling: bool = True,
    ) -> None:
        self.settings = settings
        self.sampling = sampling  # whether a stack sampler runs in this process
        self.redactor = Redactor(settings.redact_keys)
        self.resources = resources
        self.describe = describe
        self.entry_code = entry_code

    def capture(
        self,
        record: Sequence[Any],
        end_ns: int,
        *,
        started_at: float,
        facts: dict[str, Any],
        description: str,
    ) -> OutlierCapture:
        """The capture of an outlier's queued ``record``; the request ended at ``end_ns``.

        ``facts`` are what the writer knows of the request (endpoint, status, version, ...);
        they are stored with the redacted params.
        """
        request = dict(facts)
        request.update(self._params(record))
        t0, thread_id = record[T0], record[THREAD]
        resources = self.resources.load(t0) if self.resources is not None else {}
        state: Sampling | None = record[SAMPLING]
        if state is None:  # the sampler is off, or the request ended before it came by
            why = _UNREACHED if self.sampling else "not sampled"
            return OutlierCapture(request, resources, None, None, 0, why)
        crossed = None if state.crossed is None else stack_identifiers(state.crossed)
        if state.samples is None:
            return OutlierCapture(request, resources, crossed, None, 0, "not sampled")
        if not state.samples:
            return OutlierCapture(request, resources, crossed, None, 0, _UNREACHED)
        samples = list(state.samples)
        note: str | None = None
        while True:
            session = build_session(
                samples,
                t0_ns=t0,
                end_ns=end_ns,
                start_time=started_at,
                thread_name=_thread_name(thread_id),
                thread_id=thread_id,
                description=description,
                min_interval_s=self.settings.high_interval_s,
                max_interval_s=self.settings.low_interval_s,
                cpu_time=_cpu_seconds(resources, end_ns - t0),
                entry_code=self.entry_code,
            )
            profile = gzip.compress(orjson.dumps(session.to_json()), compresslevel=6)
            if len(profile) <= self.settings.max_profile_bytes:
                break
            if len(samples) < 2:
                return OutlierCapture(
                    request, resources, crossed, None, len(state.samples), "profile over size cap"
                )
            thin(samples)
            note = f"thinned to {len(samples)} samples to fit the profile size cap"
        return OutlierCapture(request, resources, crossed, profile, len(samples), note)

    def _params(self, record: Sequence[Any]) -> dict[str, Any]:
        raw = record[PARAMS]
        if raw is None and record[REQUEST] is not None and self.describe is not None:
            raw = self.describe(record[REQUEST])
        if raw is None:
            return {}
        redactor = self.redactor
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("query", "form"):
                params[key] = None if value is None else redactor.mapping(value)
            elif key == "json":
                params[key] = redactor.json(value)
            elif key == "headers":
                params[key] = redactor.headers(value, self.settings.headers)
            elif key == "files":
                params[key] = redactor.json(value)  # field and file names only
            elif key == "path" and isinstance(value, str):
                params[key] = redactor.path(value, record[RULE])  # /reset/<token> and the like
            else:
                params[key] = redactor.value(value)
        return params


def _thread_name(thread_id: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == thread_id:
            return thread.name
    return "request thread"


def _cpu_seconds(resources: dict[str, Any], duration_ns: int) -> float:
    percent = resources.get("process_cpu_percent")
    return 0.0 if percent is None else percent / 100 * duration_ns / 1e9
