"""A test run recorded like a deployment: flamewatch on every Flask app a test suite serves.

``pytest --flamewatch=STORE`` (:mod:`flamewatch_pytest`) makes one :class:`RecordedRun` per
session. It attaches flamewatch to every Flask app the tests make serve a request -- apps made
by factories, in fixtures of any scope, before or after the plugin started -- without changing
the project's code or fixtures:

- **At an app's first request**, not at its creation: ``Flask.__call__`` (what the test client
  and every WSGI server call) is wrapped for the session, and an app it has not seen yet gets
  flamewatch's middleware there, once the factory has finished configuring it. No dashboard
  and no CLI commands are added: the app's routes and commands stay the project's own.
- **One agent for all those apps** (:class:`_RunAgent`): one writer and one sampler thread for
  the session, whatever the number of apps -- Flask's own suite makes 240 that serve a request,
  and an agent per app (threads started, a store opened, written and closed for each) more
  than doubled its run time. The run's settings are theirs; their ``FLAMEWATCH_*`` config is
  not read (they do not use flamewatch themselves).
- **An app the project attaches flamewatch to itself** (``Flamewatch(app)`` in its factory)
  records into the test run's store too: while the run is recorded, every ``init_app`` takes
  the run's store, version, groups and sampling (see :attr:`.extension.recording`). An app
  that got its flamewatch before the run began keeps it as it is, and the summary says so.
- **Groups are tests**: a request's group is the node id of the test running when it was
  served, on whatever thread served it, so a live server in a thread is tagged too.
- **Dense aggregated profiles**: a suite sends each endpoint a few dozen requests, not
  thousands, so every in-flight request is sampled every :data:`SAMPLE_INTERVAL_MS`
  milliseconds instead of ten; outliers are flagged and captured as in production.

The agent of an app that attached flamewatch itself is closed (its requests written) at the
end of the first test after which the app is gone; every agent is closed at the end of the
session: no flamewatch thread outlives the run.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask

from flamewatch.sampler.logs import log
from flamewatch.sampler.store import RouteInfo, make_store, resolve_database
from flamewatch.sampler.store.connection import open_connection, safe_url
from flamewatch.sampler.version import TEST_SOURCE, VersionInfo, detect_version

from . import extension
from .agent import Agent, routes_of
from .config import Settings, load_settings
from .hooks import install

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["OUTSIDE_TESTS", "SAMPLE_INTERVAL_MS", "TEST_SOURCE", "RecordedRun", "run_version"]

#: the group of the requests served while no test runs (at collection time, say)
OUTSIDE_TESTS = "[outside tests]"
#: how often an in-flight request is sampled for the aggregated profiles, in milliseconds
SAMPLE_INTERVAL_MS = 1.0
#: how long closing one app's agent may wait for its writer
CLOSE_TIMEOUT_S = 30.0


def run_version(label: str | None, root: str | Path) -> VersionInfo:
    """The version a test run is recorded as, with the source ``"tests"``.

    ``label`` as given when there is one; else the code's version detected as in production
    (the git commit at or above ``root``, then CI variables) followed by ``-tests``: version
    names are unique in a store, and a deployment of the same commit must not add its requests
    to its test runs', nor the reverse.
    """
    if label is not None:
        if not label.strip():
            raise ValueError("--flamewatch-version is empty; give a label or leave it out")
        return VersionInfo(label.strip(), TEST_SOURCE)
    detected = detect_version(None, root_path=root)
    return VersionInfo(f"{detected.label}-tests", TEST_SOURCE)


def store_url(database: str, base_dir: str | Path) -> str:
    """The store URL of ``--flamewatch=STORE``: a relative path is taken from ``base_dir`` (the
    directory pytest was started in), not from each app's instance folder. Raises ValueError."""
    return resolve_database(database, base_dir)


class _RunAgent(Agent):
    """The agent of every app the run attaches itself (see the module): their routes are the
    routes of all of them still alive."""

    def __init__(self, app: Flask, settings: Settings, version: VersionInfo) -> None:
        super().__init__(app, settings, version)
        self.apps: weakref.WeakSet[Flask] = weakref.WeakSet()

    def _routes(self) -> list[RouteInfo]:
        return list(dict.fromkeys(route for app in list(self.apps) for route in routes_of(app)))


class RecordedRun:
    """One pytest session's requests, recorded into ``database`` as ``version``."""

    def __init__(self, database: str, version: VersionInfo) -> None:
        self.database = database
        self.version = version
        #: the node id of the test running now (read by every serving thread)
        self.current_test: str | None = None
        #: apps attached (by the run or by their own code while it ran), and requests written
        self.apps = 0
        self.requests = 0
        #: what the terminal summary must say: failures, apps left as they were
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._seen: weakref.WeakSet[Flask] = weakref.WeakSet()
        self._running: list[tuple[weakref.ref[Flask], Agent]] = []
        self._shared: _RunAgent | None = None
        self._call: Callable[..., Iterable[bytes]] | None = None
        self._wrapper: Callable[..., Iterable[bytes]] | None = None

    # -- what every app of the run gets -----------------------------------------------------

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` (an app's own ``Flamewatch(...)`` options) with the run's on top."""
        return {
            **given,
            "enabled": True,
            "database": self.database,
            "version": self.version.label,
            "group_by": self.group_of,
            "sampler": True,
            "aggregate_profiles": True,
            "sample_interval_ms": SAMPLE_INTERVAL_MS,
        }

    def group_of(self, request: Any) -> str:
        return self.current_test or OUTSIDE_TESTS

    def adopt(self, app: Flask, agent: Agent) -> None:
        """Called by ``init_app`` during the run: the agent is the run's to close."""
        with self._lock:
            self._seen.add(app)
            self._running.append((weakref.ref(app), agent))
            self.apps += 1

    def attach(self, app: Flask) -> None:
        """Put flamewatch on ``app`` unless it has it: on its first request (see the module)."""
        with self._lock:
            if app in self._seen:
                return
            self._seen.add(app)
            if "flamewatch" in app.extensions:  # attached by its own code before the run began
                self.problems.append(
                    f"app {app.name!r} had flamewatch before the test run began: its requests"
                    " go to the store its own settings name"
                )
                return
            try:
                agent = self._shared
                if agent is None:
                    settings = load_settings({}, self.options({"dashboard": False}), ".")
                    agent = self._shared = _RunAgent(app, settings, self.version)
                    agent.seed()
                install(app, agent)
                agent.apps.add(app)
                app.extensions["flamewatch"] = agent
                self.apps += 1
            except Exception as exc:  # the test must run as without flamewatch
                log.exception("flamewatch: cannot record the requests of app %r", app.name)
                self.problems.append(f"app {app.name!r} is not recorded: {exc}")

    # -- the session ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the store, then record every app from now on. Raises ValueError saying what
        is wrong with the store (the session must not run for nothing)."""
        self._check_store()
        call = self._call = Flask.__call__
        seen, attach = self._seen, self.attach

        def __call__(
            app: Flask, environ: WSGIEnvironment, start_response: StartResponse
        ) -> Iterable[bytes]:
            if app not in seen:
                attach(app)
            return call(app, environ, start_response)

        self._wrapper = __call__
        Flask.__call__ = __call__  # type: ignore[method-assign,assignment]
        extension.recording = self

    def test_started(self, node_id: str) -> None:
        self.current_test = node_id

    def test_finished(self) -> None:
        """Close the agents of the apps gone with the test (their fixtures are torn down)."""
        self.current_test = None
        with self._lock:
            gone = [agent for app, agent in self._running if app() is None]
            self._running = [(app, agent) for app, agent in self._running if app() is not None]
        for agent in gone:
            self._close(agent)

    def finish(self) -> None:
        """Write and close every agent of the run (at the end of the session; idempotent)."""
        with self._lock:
            running, self._running = self._running, []
            shared, self._shared = self._shared, None
        for _, agent in running:
            self._close(agent)
        if shared is not None:
            self._close(shared)

    def stop(self) -> None:
        """Finish, and leave Flask as it was."""
        self.finish()
        if extension.recording is self:
            extension.recording = None
        if self._wrapper is not None and Flask.__dict__.get("__call__") is self._wrapper:
            Flask.__call__ = self._call  # type: ignore[method-assign,assignment]
        self._wrapper = None

    def summary(self) -> list[str]:
        """What the terminal shows at the end of the session."""
        lines = [
            f"flamewatch: {self.requests} requests of {self.apps} apps recorded in"
            f" {safe_url(self.database)} as version {self.version.label} ({TEST_SOURCE})"
        ]
        return lines + [f"flamewatch: {problem}" for problem in self.problems]

    def _close(self, agent: Agent) -> None:
        try:
            written = agent.flush(CLOSE_TIMEOUT_S)
            self.requests += agent.written
            closed = agent.close(CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.exception("flamewatch: closing a test run's agent failed")
            written = closed = False
            self.problems.append(f"closing an app's agent failed: {exc}")
        if not (written and closed):
            self.problems.append(
                f"not every request could be written to {safe_url(self.database)} (see the log)"
            )

    def _check_store(self) -> None:
        """Create or migrate the store now, and refuse a version label that production uses:
        a test run must not add its requests to a deployment's."""
        if self.database.startswith("sqlite:///"):  # its folder, for a fresh CI checkout
            Path(self.database[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        store = make_store(self.database)
        try:
            store.open()
        except Exception as exc:
            raise ValueError(f"cannot open the store {safe_url(self.database)}: {exc}") from None
        finally:
            store.close()
        conn = open_connection(self.database)
        try:
            row = conn.execute(
                "SELECT source FROM versions WHERE name = ?", (self.version.label,)
            ).fetchone()
        finally:
            conn.close()
        if row is not None and row[0] != TEST_SOURCE:
            raise ValueError(
                f"version {self.version.label!r} in {safe_url(self.database)} was recorded by"
                f" a deployment (source {row[0]!r}), not by tests; give the test run a label of"
                " its own with --flamewatch-version"
            )
