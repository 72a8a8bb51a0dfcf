from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from pgserver import PostgresServer

from flamewatch.flask_plugin import Agent, Flamewatch
from flamewatch.flask_plugin.agent import _agents
from flamewatch.sampler.store import open_stores


def _flamewatch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flamewatch-") and t.is_alive()]


@pytest.fixture(autouse=True)
def leak_detector() -> Iterator[None]:
    """Fail a test that leaves a flamewatch thread or store connection behind."""
    yield
    threads, stores = _flamewatch_threads(), open_stores()
    for agent in list(_agents):  # clean up so one leak does not fail every later test
        agent.close(5)
    assert not threads, f"flamewatch threads left running: {threads}"
    assert not stores, f"store connections left open: {stores}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, started when a test first asks."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped after the test."""
    url = postgres_server.database()
    yield url
    postgres_server.drop(url)


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The store of a test that runs against both backends: a SQLite file or a PG URL."""
    if request.param == "sqlite":
        return tmp_path / "store.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def make_app(db_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build a test app with a few views and flamewatch on it; closed after the test."""
    apps: list[Flask] = []

    def make(*, init: bool = True, **config: Any) -> Flask:
        app = Flask("testapp")
        app.config.update(TESTING=True, FLAMEWATCH_DATABASE=str(db_path), FLAMEWATCH_VERSION="v1")
        app.config.update({f"FLAMEWATCH_{k.upper()}": v for k, v in config.items()})

        @app.get("/")
        def index() -> str:
            return "hello"

        @app.get("/items/<int:item_id>")
        def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        if init:
            Flamewatch(app)
        apps.append(app)
        return app

    yield make
    for app in apps:  # also apps a test initialised itself
        agent = app.extensions.get("flamewatch")
        if agent is not None:
            agent.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def fw(app: Flask) -> Agent:
    return app.extensions["flamewatch"]  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


SPEEDSCOPE_VERSION = "1.25.0"
#: speedscope's published file-format schema, vendored (see the README beside it)
SPEEDSCOPE_SCHEMA = Path(__file__).parent / "data" / f"speedscope-{SPEEDSCOPE_VERSION}"


@pytest.fixture(scope="session")
def speedscope_schema() -> dict[str, Any]:
    """speedscope's file-format schema, from its npm package (pinned, vendored)."""
    path = SPEEDSCOPE_SCHEMA / "file-format-schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def pytest_configure(config: pytest.Config) -> None:
    """The coverage floor (``fail_under`` in pyproject.toml) holds for the whole suite only.

    A run of some tests (files or folders named, ``-k``, ``-m``, ``--lf``, ``--deselect``)
    covers less by design and would fail on the floor though every test passed; it keeps no
    floor and prints no figure. ``--no-cov`` skips measuring altogether.
    """
    coverage = config.pluginmanager.getplugin("_cov")  # pytest-cov's plugin, when measuring
    if coverage is None:
        return
    option = config.option
    whole_suite = config.args_source == pytest.Config.ArgsSource.TESTPATHS and not (
        option.keyword or option.markexpr or option.deselect or getattr(option, "lf", False)
    )  # --lf is the cache provider's, which -p no:cacheprovider leaves out
    if not whole_suite:
        coverage.options.cov_fail_under = None
