"""Reading what flamewatch stored, straight from the SQLite file or PostgreSQL database."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.request import urlopen

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from flamewatch.flask_plugin import Flamewatch

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# without these, Chromium tries Google's services at start, which a closed network refuses
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium, closed on exit; a test fails (not skips) when it is not installed."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 -- optional: browser tests only

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is needed: apt-get install chromium (the README's test command does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def shop_app(name: str, instance: Path) -> Flask:
    """An app with two endpoints, ``/`` and ``/items/<id>``, before flamewatch is added."""
    app = Flask(name, instance_path=str(instance))

    @app.get("/")
    def index() -> str:
        return "hello"

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        return f"item {item_id}"

    return app


def warm(app: Flask, paths: list[str], slow_s: float) -> None:
    """Serve each path until its endpoint's threshold is known and well under ``slow_s``: on a
    loaded machine one stalled warm-up request can otherwise lift it above the slow requests."""
    client = app.test_client()
    thresholds = app.extensions["flamewatch"].recorder.thresholds_ns
    limit = slow_s * 1e9 / 2
    for path in paths:
        endpoint = app.url_map.bind("").match(path)[0]
        for _ in range(6):
            for _ in range(10):
                client.get(path)
            flush(app)
            if thresholds.get(endpoint, limit) < limit:
                break
        assert thresholds.get(endpoint, limit) < limit, thresholds


def flush(app: Flask) -> None:
    """Wait for the app's writer; fail if the store could not be written."""
    assert app.extensions["flamewatch"].flush(timeout=30), "flush failed"


Database = Path | str  # a SQLite file, or a postgresql:// URL


def is_pg(database: Database) -> bool:
    return isinstance(database, str) and database.startswith("postgresql://")


class PgRow(tuple):  # type: ignore[type-arg]
    """A PostgreSQL row read like a ``sqlite3.Row``: by index or by column name."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def rows(db_path: Database, sql: str = "SELECT * FROM requests", *args: Any) -> list[Any]:
    """Read rows from a real store (a fresh connection, closed at once); qmark SQL."""
    if is_pg(db_path):
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        with psycopg.connect(str(db_path)) as pg:
            cur = pg.execute(sql.replace("?", "%s"), args)
            names = tuple(c.name for c in cur.description or ())
            found = []
            for values in cur.fetchall():
                row = PgRow(values)
                row.names = names
                found.append(row)
            return found
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


REQUESTS_SQL = """
SELECT r.*, e.name AS endpoint, ru.rule AS rule, v.name AS version, g.name AS grp,
       p.hostname AS hostname, p.pid AS pid
FROM requests r
JOIN endpoints e ON e.id = r.endpoint_id
LEFT JOIN rules ru ON ru.id = r.rule_id
JOIN versions v ON v.id = r.version_id
LEFT JOIN user_groups g ON g.id = r.group_id
JOIN processes p ON p.id = r.process_id
ORDER BY r.id
"""


def stored(db_path: Database) -> list[Any]:
    """Every stored request with its names resolved, oldest first."""
    return rows(db_path, REQUESTS_SQL)


class Durations(NamedTuple):
    """Stored durations (ms) grouped as the report groups them."""

    by_endpoint: dict[str, list[float]]
    by_version: dict[tuple[str, str], list[float]]  # (endpoint, version)
    by_group: dict[tuple[str, str], list[float]]  # (endpoint, group)
    by_group_version: dict[tuple[str, str, str], list[float]]  # (endpoint, group, version)


def durations_by(stored: Iterable[Sequence[Any]]) -> Durations:
    """The durations of ``stored`` rows, each ``(endpoint, version, group, duration_ms, ...)``,
    per endpoint, version, group and group in a version: the reference a report is checked
    against."""
    durations = Durations(
        defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    )
    for endpoint, version, group, duration, *_ in stored:
        durations.by_endpoint[endpoint].append(duration)
        durations.by_version[(endpoint, version)].append(duration)
        durations.by_group[(endpoint, group)].append(duration)
        durations.by_group_version[(endpoint, group, version)].append(duration)
    return durations


def group_from_header(request: Any) -> str:
    """A group_by callable named by import path in a test."""
    return f"team-{request.headers['X-Team']}"


HOSTILE_ENDPOINT = "<script>alert('endpoint')</script>"
HOSTILE_USER = "<img src=x onerror=alert('user')>"
HOSTILE_PARAM = "</script><script>alert('param')</script>"


def watch_by_user(app: Flask, database: Database, version: str) -> None:
    """flamewatch on a history's app: grouped by the ``X-User`` header, sampled every
    millisecond, aggregated profiles flushed every half second, so that a history of a few
    seconds has its profiles stored."""
    Flamewatch(
        app,
        database=str(database),
        version=version,
        group_by=lambda req: req.headers.get("X-User"),
        sample_interval_ms=1,
        aggregate_flush_interval=0.5,
    )


#: the captured outliers that are the planted slow checkouts (``?slow=1``), by id (with
#: :data:`SLOW_CHECKOUT_MS` and :data:`SLOW_QUERY_PATTERN`): a quick checkout that a loaded
#: machine stalled past the duration is not one
SLOW_OUTLIERS_SQL = (
    "SELECT o.id FROM outliers o JOIN requests r ON r.id = o.request_id"
    " JOIN endpoints e ON e.id = r.endpoint_id"
    " WHERE e.name = 'checkout' AND r.duration_ms >= ? AND o.request_json LIKE ?"
    " ORDER BY o.id"
)
#: what a planted slow checkout's stored request holds
SLOW_QUERY_PATTERN = '%"slow":"1"%'
#: the duration (ms) above which a request of :func:`make_history` is one of its slow checkouts
SLOW_CHECKOUT_MS = 120


def slow_checkout() -> None:
    """What the slow checkouts of :func:`make_history` spend their time in."""
    time.sleep(0.12)


def make_history(database: Path, versions: dict[str, float], *, instance: Path) -> None:
    """Real traffic through a real app across versions, with hostile names and outliers.

    ``versions`` maps a version label to the checkout view's extra milliseconds, so a larger
    number is a regression. Every agent is closed before returning.
    """

    for version, checkout_ms in versions.items():
        app = Flask("history", instance_path=str(instance))
        app.config.update(TESTING=True)

        @app.get("/")
        def index() -> str:
            return "hello"

        @app.get("/checkout")
        def checkout() -> str:
            if request.args.get("slow"):
                slow_checkout()
            time.sleep(checkout_ms / 1000)  # noqa: B023 - each app is used in its own turn
            return "ok"

        def hostile() -> str:
            return "hostile"

        app.add_url_rule("/hostile", endpoint=HOSTILE_ENDPOINT, view_func=hostile)
        fw = Flamewatch(
            app,
            database=str(database),
            version=version,
            outlier_warmup=10,
            group_by=lambda req: req.headers.get("X-User"),
            # a regressed version's first checkouts are outliers too (measured against the
            # previous version's), as are quick requests a loaded machine stalls: room for all
            profiles_per_hour=1000,
        )
        client = app.test_client()
        for i in range(40):
            user = HOSTILE_USER if i % 4 == 0 else f"user{i % 3}"
            client.get("/checkout", headers={"X-User": user})
            client.get("/", headers={"X-User": user})
            client.get("/hostile", headers={"X-User": user})
        fw.flush()
        client.get(f"/checkout?slow=1&q={HOSTILE_PARAM}", headers={"X-User": HOSTILE_USER})
        fw.close()


def regression_history(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A SQLite store made by :func:`make_history` over 1.0 and 2.0 (where checkout got 6 ms
    slower), in a new folder named after ``name``; for a module-scoped fixture."""
    tmp = tmp_path_factory.mktemp(name)
    database = tmp / "store.sqlite3"
    make_history(database, {"1.0": 2, "2.0": 8}, instance=tmp)
    return database


def fetch_concurrently(app: Flask, paths: list[str], clients: int = 8) -> list[bytes]:
    """Serve ``app`` on a real threaded werkzeug server on a free loopback port, GET every path
    from ``clients`` concurrent clients, stop the server; return the bodies in order."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"

    def fetch(path: str) -> bytes:
        with urlopen(base + path, timeout=30) as response:
            body: bytes = response.read()
            return body

    try:
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(fetch, paths))
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
