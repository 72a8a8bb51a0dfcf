"""The pytest plugin: ``pytest --flamewatch=STORE`` records the requests of a test run.

Registered through the ``pytest11`` entry point, so pytest loads this module in every run of
every project where flamewatch is installed. It is off unless asked (``--flamewatch=STORE``
or ``FLAMEWATCH_PYTEST_STORE``), and off it imports nothing but pytest -- nothing of
flamewatch either: it is a top-level module of its own (``flamewatch_pytest``, kept in
``flask_plugin/flamewatch_pytest/``), since importing any module of the ``flamewatch``
namespace imports its parents too. Flask, the agent and the store are imported only when a
run is recorded (:mod:`flamewatch.flask_plugin.recorded_run`).

It starts as early as pytest lets a plugin (before the project's ``conftest.py`` files are
imported), so an app a conftest makes at import time is recorded too, and a factory that
attaches flamewatch itself writes into the run's store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flamewatch.flask_plugin.recorded_run import RecordedRun

__all__ = ["STORE_VARIABLE"]

#: the environment variable that names the store when ``--flamewatch`` is not given
STORE_VARIABLE = "FLAMEWATCH_PYTEST_STORE"
_PLUGIN_NAME = "flamewatch-recorded-run"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flamewatch", "flamewatch: response times from test runs")
    group.addoption(
        "--flamewatch",
        dest="flamewatch_store",
        metavar="STORE",
        default=None,
        help="Record every request the tests' Flask apps serve into STORE (a SQLite file path"
        f" or a postgresql:// URL), per test and version. Also ${STORE_VARIABLE}.",
    )
    group.addoption(
        "--flamewatch-version",
        dest="flamewatch_version",
        metavar="LABEL",
        default=None,
        help="The version label of this run. Default: the git commit (or CI variable) with"
        " '-tests' appended.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    namespace = early_config.known_args_namespace
    _start(early_config, namespace.flamewatch_store, namespace.flamewatch_version)


def pytest_configure(config: pytest.Config) -> None:
    _start(  # when the early hook did not run (the plugin loaded late): no-op otherwise
        config, config.getoption("flamewatch_store"), config.getoption("flamewatch_version")
    )


def _start(config: pytest.Config, store: str | None, label: str | None) -> None:
    if config.pluginmanager.has_plugin(_PLUGIN_NAME):
        return
    store = store or os.environ.get(STORE_VARIABLE) or None
    if store is None:
        return
    # lazy start-up: off, the plugin imports nothing but pytest (see the module)
    from flamewatch.flask_plugin.recorded_run import (  # noqa: PLC0415 -- lazy start-up
        RecordedRun,
        run_version,
        store_url,
    )

    try:
        run = RecordedRun(
            store_url(store, Path.cwd()),
            run_version(label, config.rootpath),
        )
        run.start()
    except ValueError as exc:
        raise pytest.UsageError(f"flamewatch: {exc}") from None
    config.add_cleanup(run.stop)
    config.pluginmanager.register(_RunHooks(run), _PLUGIN_NAME)


class _RunHooks:
    """The run's pytest hooks: which test is running, and the end of the session."""

    def __init__(self, run: RecordedRun) -> None:
        self.run = run

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.run.test_started(nodeid)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.run.test_finished()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.run.finish()  # before the terminal summary, which the reporter writes after

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.run.summary():
            terminalreporter.write_line(line)
