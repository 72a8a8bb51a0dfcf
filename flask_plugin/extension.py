"""The Flask extension: ``Flamewatch(app)`` or ``Flamewatch().init_app(app)``."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from flask import Flask

from flamewatch.sampler import VersionInfo, detect_version
from flamewatch.sampler.logs import log
from flamewatch.sampler.store.connection import safe_url

from .agent import Agent
from .cli import flamewatch_cli
from .config import check_option_names, load_settings
from .dashboard import register_dashboard
from .hooks import install

__all__ = ["Flamewatch", "RecordingRun"]


class RecordingRun(Protocol):
    """What ``init_app`` uses of a :class:`~.recorded_run.RecordedRun` (which imports this
    module to set :data:`recording`: naming the class here would make the two a circle)."""

    @property
    def version(self) -> VersionInfo: ...
    def options(self, given: Mapping[str, Any]) -> dict[str, Any]: ...
    def adopt(self, app: Flask, agent: Agent) -> None: ...


#: the test run the pytest plugin records, while it does (see :mod:`.recorded_run`): every
#: ``init_app`` meanwhile writes to its store, with its version, group and sampling settings
recording: RecordingRun | None = None


class Flamewatch:
    """Times every request of an app, stores it with its version and user, flags outliers.

    Options are the settings of docs/configuration.md, by their lower-case names
    (``Flamewatch(app, group_by=..., database=...)``); they win over ``app.config``'s
    ``FLAMEWATCH_*`` keys. One instance may be initialised on several apps; each app's state
    lives in ``app.extensions["flamewatch"]``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        check_option_names(options)
        self.options = options
        self._agents: weakref.WeakSet[Agent] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the settings and install flamewatch on ``app``; raises ``ConfigError``."""
        if "flamewatch" in app.extensions:
            raise RuntimeError("flamewatch is already initialised on this app")
        run = recording
        options = self.options if run is None else run.options(self.options)
        settings = load_settings(app.config, options, app.instance_path)
        if run is not None:
            version = run.version
        else:
            version = detect_version(
                settings.version, git_path=settings.git, root_path=app.root_path
            )
        agent = Agent(app, settings, version)
        app.extensions["flamewatch"] = agent
        self._agents.add(agent)
        if run is not None:
            run.adopt(app, agent)
        if not settings.enabled:
            agent.closed = True
            log.info("flamewatch: disabled on %s (FLAMEWATCH_ENABLED is false)", app.name)
            return
        agent.seed()
        install(app, agent)
        register_dashboard(app, agent)
        _register_cli(app)
        log.info(
            "flamewatch: monitoring %s, version %s (from %s), store %s",
            app.name,
            version.label,
            version.source,
            safe_url(settings.database),
        )

    #: :meth:`init_app` as Flask-MonitoringDashboard spells it (``dashboard.bind(app)``)
    bind = init_app

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every request recorded so far, on every app, is in the store.

        Returns False if ``timeout`` (seconds) passed first or a store cannot be written.
        """
        results = [agent.flush(timeout) for agent in list(self._agents)]  # every one, always
        return all(results)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush and stop the background threads; requests after this are not recorded."""
        results = [agent.close(timeout) for agent in list(self._agents)]
        return all(results)


def _register_cli(app: Flask) -> None:
    if "flamewatch" not in app.cli.commands:
        app.cli.add_command(flamewatch_cli)
