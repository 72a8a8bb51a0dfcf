"""The per-app state of flamewatch: settings, recorder, and the writer's life cycle.

An :class:`Agent` lives in ``app.extensions["flamewatch"]``. Its background thread starts with
the first request a process serves (so gunicorn's pre-fork master never owns one), starts
afresh in a forked child, and is flushed and stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import os
import platform
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any

from flask import Flask

from flamewatch.sampler import Recorder, Writer
from flamewatch.sampler.capture import Capturer, CaptureSettings
from flamewatch.sampler.folding import StackFolder
from flamewatch.sampler.logs import log, log_swallowed
from flamewatch.sampler.resources import ResourceMonitor
from flamewatch.sampler.stack_sampler import StackSampler
from flamewatch.sampler.store import (
    Baseline,
    ProcessInfo,
    RouteInfo,
    Store,
    StoreError,
    make_store,
)
from flamewatch.sampler.version import VersionInfo, flamewatch_version
from flamewatch.sampler.writer import seed_statistics, thresholds_ns

from .config import Settings
from .hooks import ENTRY_CODE
from .params import describe_request

__all__ = ["Agent", "routes_of"]

EXIT_FLUSH_TIMEOUT_S = 5.0
#: how long a monitor switch waits for the writer to reach the store
SWITCH_TIMEOUT_S = 5.0

_agents: weakref.WeakSet[Agent] = weakref.WeakSet()
# stores inherited from a parent process: never touched, never finalized, in a forked child
_inherited: list[Store] = []


class Agent:
    """flamewatch on one Flask app, in one process."""

    def __init__(self, app: Flask, settings: Settings, version: VersionInfo) -> None:
        self.settings = settings
        self.version = version
        self.recorder = Recorder(settings.queue_size, self._monitored_default, settings.outlier)
        self._app_ref = weakref.ref(app)
        #: what the store held for this version when the app was set up (see :meth:`seed`)
        self._baselines: dict[str, Baseline] = {}
        self._writer: Writer | None = None
        self._sampler: StackSampler | None = None
        self._lock = threading.Lock()
        self.running = False
        self.closed = False
        #: called with the request and response of every request that matched no URL rule (a
        #: 404 or 405): the dashboard gives those under its prefix its headers
        self.unrouted: Callable[[Any, Any], Any] | None = None
        _agents.add(self)

    @property
    def database(self) -> str:
        return self.settings.database

    def _monitored_default(self, endpoint: str) -> bool:
        return not self.settings.is_excluded(endpoint)

    def _routes(self) -> Sequence[RouteInfo]:
        app = self._app_ref()
        return [] if app is None else routes_of(app)

    def seed(self) -> None:
        """Read the outlier statistics this version starts from, and publish its thresholds.

        Called when the app is set up, off any request: the threshold of an endpoint that the
        store knows (this version's own recent requests after a restart, the previous
        version's after a deploy; see :func:`~flamewatch.sampler.writer.seed_statistics`) is
        in force from the process's very first request, which the writer -- started by that
        request -- could not promise. A store that does not exist yet is not created here; a
        store that cannot be read leaves the writer to seed once it connects.
        """
        url = self.settings.database
        if url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :]):
            return
        store = make_store(url, self.settings.limits)
        try:
            store.open()
            self._baselines = store.baselines(self.version.label, self.settings.outlier.window)
        except Exception as exc:
            log.info("flamewatch: no thresholds read from %s yet: %s", store.url, exc)
            return
        finally:
            store.close()
        rule = self.settings.outlier
        self.recorder.thresholds_ns.update(
            thresholds_ns(seed_statistics(self._baselines, rule), rule)
        )

    def start(self) -> None:
        """Start the background threads in this process (idempotent; the first request does)."""
        with self._lock:
            if self.running or self.closed:
                return
            settings = self.settings
            process = ProcessInfo(
                hostname=socket.gethostname(),
                pid=os.getpid(),
                version=self.version.label,
                version_source=self.version.source,
                started_at=time.time(),
                agent=f"flamewatch {flamewatch_version()} / Python {platform.python_version()}",
            )
            green = _green_threads()
            sampling = settings.sampler and not green
            folder = None
            if sampling and settings.aggregate_profiles:
                folder = StackFolder(
                    max_stacks=settings.aggregate_max_stacks,
                    max_groups=settings.aggregate_max_groups,
                    entry_code=ENTRY_CODE,
                )
            resources = ResourceMonitor()
            capturer = Capturer(
                CaptureSettings(
                    redact_keys=settings.redact,
                    # WSGI servers pass header names dashed: "laravel_session" arrives dashed
                    headers=frozenset(
                        h.lower().replace("_", "-") for h in settings.capture_headers
                    ),
                    max_profile_bytes=settings.max_profile_kb * 1024,
                    low_interval_s=settings.sample_interval_ms / 1000,
                    high_interval_s=settings.outlier_sample_interval_ms / 1000,
                ),
                resources,
                self._describe_later,
                entry_code=ENTRY_CODE,
                sampling=sampling,
            )
            self._writer = Writer(
                make_store(settings.database, settings.limits),
                self.recorder,
                settings.outlier,
                process,
                flush_interval=settings.flush_interval,
                routes=self._routes,
                capturer=capturer,
                captures_per_hour=settings.profiles_per_hour,
                retention_days=settings.retention_days,
                histogram_retention_days=settings.histogram_retention_days,
                folder=folder,
                profile_interval=settings.aggregate_flush_interval,
                stats=seed_statistics(self._baselines, settings.outlier),
                resources=resources,
            )
            self._writer.start()
            if settings.sampler and green:
                log.warning(
                    "flamewatch: %s has patched threading; stack sampling is off, outliers are"
                    " flagged and captured without a profile",
                    green,
                )
            if sampling:
                self._sampler = StackSampler(
                    self.recorder.inflight,
                    interval_s=settings.sample_interval_ms / 1000,
                    outlier_interval_s=settings.outlier_sample_interval_ms / 1000,
                    max_samples=settings.max_samples,
                    activity=self.recorder.activity,
                    folder=folder,
                    capped=self.recorder.capped,
                )
                self._sampler.start()
                self.recorder.sampler = self._sampler
            self.running = True

    def describe_request(self, request: Any, read_body: bool = False) -> dict[str, Any]:
        """An outlier's raw request facts (see :mod:`.params`)."""
        return describe_request(
            request, read_body=read_body, max_body=self.settings.max_body_kb * 1024
        )

    def _describe_later(self, request: Any) -> dict[str, Any]:
        try:
            return self.describe_request(request, read_body=False)
        except Exception:
            log_swallowed("reading an outlier's request facts")
            return {}

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record accepted so far is written; False on timeout or failure."""
        writer = self._writer
        if writer is None:
            return not self.recorder.queue
        return writer.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write what is queued, stop the threads; later requests are not recorded."""
        with self._lock:
            self.closed = True
            self.running = False
            writer, self._writer = self._writer, None
            sampler, self._sampler = self._sampler, None
            self.recorder.sampler = None
        stopped = sampler.stop(timeout) if sampler is not None else True
        return (writer.stop(timeout) if writer is not None else True) and stopped

    def switch_monitoring(
        self,
        endpoint: str,
        monitored: bool,
        routes: Collection[str],
        timeout: float = SWITCH_TIMEOUT_S,
    ) -> bool:
        """Store ``endpoint``'s monitor flag and publish the stored flags to this process's
        recorder at once (the other processes read them at their next sync); False, and
        nothing written, when the endpoint is neither in the store nor one of ``routes``.

        The writer thread does it with its own store link (:meth:`Writer.on_store`): one store
        connection per app and process, and no route sync can publish the flags read just
        before the switch after it. Raises :class:`StoreError` when the writer is not running
        (flamewatch is closed) or cannot reach the store within ``timeout`` seconds.
        """

        def switch(store: Store) -> bool:
            if endpoint not in store.monitor_flags() and endpoint not in routes:
                return False
            store.set_monitored(endpoint, monitored)
            self.recorder.set_monitor_flags(store.monitor_flags())
            return True

        writer = self._writer
        if writer is None:
            raise StoreError("flamewatch is not running in this process (closed, or not started)")
        return writer.on_store(switch, timeout)

    @property
    def written(self) -> int:
        return self._writer.written if self._writer is not None else 0

    def _after_fork_in_child(self) -> None:
        # the lock may have been held by another thread at fork time: replace it
        self._lock = threading.Lock()
        if self._writer is not None:
            _inherited.append(self._writer.store)
        self._writer = None
        self._sampler = None
        self.running = False
        self.recorder.reset_after_fork()


def routes_of(app: Flask) -> list[RouteInfo]:
    """The routes of an app's URL map, without the dashboard's (which are not the app's)."""
    return [
        RouteInfo(rule.endpoint, rule.rule, tuple(sorted(rule.methods or ())))
        for rule in list(app.url_map.iter_rules())
        if not rule.endpoint.startswith("flamewatch.")
    ]


def _green_threads() -> str | None:
    """The name of gevent or eventlet when it monkey-patched threading, else None.

    Their greenlets share one OS thread, and ``sys._current_frames()`` knows OS threads only:
    a sample could not tell one request from another.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


def _after_fork_in_child() -> None:
    for agent in list(_agents):
        agent._after_fork_in_child()


def _flush_all_at_exit() -> None:
    for agent in list(_agents):
        try:
            agent.close(EXIT_FLUSH_TIMEOUT_S)
        except Exception:
            log.exception("flamewatch: flushing at exit failed")


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
