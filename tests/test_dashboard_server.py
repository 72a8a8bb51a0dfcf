"""The live dashboard on a real threaded server under traffic, browsed by headless Chromium.

Chromium logs in with HTTP Basic credentials, browses the pages while clients keep requesting
the app, and switches an endpoint off on the Monitoring page. From then on that endpoint's
requests are not recorded -- by the process that served the page at once, by another worker
process of the same service (its own agent on the same store) at its writer's next flag
refresh -- while the other endpoints' requests still are.
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from flask import Flask
from helpers import chromium, flush, make_history, rows, shop_app, stored
from playwright.sync_api import Browser, ConsoleMessage
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from flamewatch.flask_plugin import Flamewatch
from flamewatch.flask_plugin.auth import HASH_BURST, HASH_CHECKS_PER_S

USER, PASSWORD = "ops", "correct horse battery staple"
REFRESH_TIMEOUT_S = 15.0  # the writer re-reads the flags every ~2 s; generous on a busy machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def _worker(database: Path, instance: Path) -> Flask:
    """One worker process's app (as gunicorn would import it), with flamewatch on it."""
    app = shop_app("shop", instance)
    Flamewatch(
        app,
        database=str(database),
        version="3.0",
        username=USER,
        password=generate_password_hash(PASSWORD),
        secret_key="one key for every worker of the shop",
        flush_interval=0.05,
    )
    return app


class Traffic:
    """Clients requesting the app over HTTP until stopped; remembers when each request left."""

    def __init__(self, base: str, paths: list[str], clients: int = 3) -> None:
        self.base = base
        self.paths = paths
        self.sent: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"traffic-{i}")
            for i in range(clients)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            started = time.time()
            try:
                with urlopen(self.base + path, timeout=30) as response:
                    response.read()
                    status = response.status
            except HTTPError as exc:
                status = exc.code
            self.sent.append((started, path, status))
            time.sleep(0.005)


def _count(database: Path, endpoint: str) -> int:
    return sum(1 for r in stored(database) if r["endpoint"] == endpoint)


def _recorded(database: Path, endpoint: str, after: float) -> int:
    return sum(1 for r in stored(database) if r["endpoint"] == endpoint and r["started_at"] > after)


def test_browsing_the_dashboard_and_switching_an_endpoint_off_under_traffic(
    browser: Browser, tmp_path: Path
) -> None:
    database = tmp_path / "store.sqlite3"
    make_history(database, {"1.0": 2}, instance=tmp_path)
    served, other = _worker(database, tmp_path), _worker(database, tmp_path)
    other_client = other.test_client()
    server = make_server("127.0.0.1", 0, served, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="dashboard-server")
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}"
    problems: list[str] = []
    dialogs: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"{message.text} at {message.location.get('url')}")

    try:
        assert other_client.get("/items/1").status_code == 200
        flush(other)
        with Traffic(base, ["/", "/items/1", "/items/2"]) as traffic:
            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
            page = context.new_page()
            page.on("console", console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            page.goto(f"{base}/flamewatch/", wait_until="load")
            assert page.locator("h1").inner_text() == "Endpoints"
            page.locator("nav a", has_text="Utilization").click()
            page.locator("[data-figure='hits-per-day'] svg.main-svg").first.wait_for()
            page.locator("nav a", has_text="Outliers").click()
            # the history's slow checkout (the traffic may add outliers of its own)
            page.locator("table.sortable tbody tr", has_text="checkout").locator("a").first.click()
            viewer = page.frame_locator("iframe.profile")
            viewer.locator("#app *").first.wait_for(timeout=15_000)  # pyinstrument's viewer drew

            page.locator("nav a", has_text="Monitoring").click()
            row = page.locator('tr[data-endpoint="item"]')
            assert row.locator("button").inner_text() == "Turn off"
            row.locator("button").click()
            page.wait_for_load_state("load")
            assert page.locator('tr[data-endpoint="item"] button').inner_text() == "Turn on"
            switched_at = time.time()

            # the other worker's writer re-reads the flags on its own, every ~2 s
            deadline = time.monotonic() + REFRESH_TIMEOUT_S
            other_recorder = other.extensions["flamewatch"].recorder
            while other_recorder.is_monitored("item") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not other_recorder.is_monitored("item")
            flush(served)
            flush(other)
            items, indexes = _count(database, "item"), _count(database, "index")
            assert other_client.get("/items/3").status_code == 200
            assert other_client.get("/").status_code == 200
            flush(other)
            assert _count(database, "item") == items  # the other worker no longer records it
            assert _count(database, "index") > indexes  # ... but still records the rest
            time.sleep(0.5)  # traffic goes on after the switch
            context.close()
        flush(served)
        flush(other)
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
        for app in (served, other):
            app.extensions["flamewatch"].close()

    assert not problems
    assert not dialogs
    assert {status for _, _, status in traffic.sent} == {200}
    after = switched_at + 0.25  # started_at is derived from the monotonic clock
    items_sent_after = [t for t, p, _ in traffic.sent if p.startswith("/items/") and t > after]
    assert len(items_sent_after) > 10
    assert _recorded(database, "item", after) == 0
    assert _recorded(database, "index", after) > 5
    assert _recorded(database, "item", time.time() - 3600) > 10  # before the switch it was
    assert not [r for r in stored(database) if r["endpoint"].startswith("flamewatch")]
    (flag,) = rows(database, "SELECT monitored FROM endpoints WHERE name = 'item'")
    assert flag[0] == 0


def _get(base: str, path: str, user: str, password: str, source: str) -> int:
    """One request from ``source`` (a loopback address of this machine) with Basic credentials."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        connection.request("GET", path, headers={"Authorization": f"Basic {token}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_clients_hammering_the_login_cannot_make_the_app_hash_without_bound(
    tmp_path: Path,
) -> None:
    """The issue's case: with a hashed password, unauthenticated clients sending wrong
    credentials as fast as they can (new user names, so that no back-off stops them) once made
    the app's own requests wait for their hashing. Now their hash checks are budgeted: counted
    here, never timed."""
    database = tmp_path / "store.sqlite3"
    app = _worker(database, tmp_path)
    (authenticate,) = app.before_request_funcs["flamewatch"]
    budget = authenticate.__self__.gate.budget
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="login-server")
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}"
    attempts_per_client = 40
    statuses: list[int] = []

    def hammer(client: int) -> None:
        for n in range(attempts_per_client):
            statuses.append(_get(base, "/flamewatch/", f"u{client}-{n}", "guess", "127.0.0.1"))

    attackers = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    try:
        started = time.monotonic()
        for thread in attackers:
            thread.start()
        app_statuses = [_get(base, "/items/1", "", "", "127.0.0.1") for _ in range(20)]
        admin = [_get(base, "/flamewatch/", USER, PASSWORD, "127.0.0.2")]
        while admin[-1] != 200 and len(admin) < 200:  # 429 "busy" at worst: retried
            time.sleep(0.05)
            admin.append(_get(base, "/flamewatch/", USER, PASSWORD, "127.0.0.2"))
        for thread in attackers:
            thread.join(120)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        serving.join()
        server.server_close()
        app.extensions["flamewatch"].close()
    assert app_statuses == [200] * 20
    assert admin[-1] == 200  # a network that has not failed gets in during the attack
    assert len(statuses) == 4 * attempts_per_client
    assert set(statuses) == {401, 429}
    # two buckets of HASH_BURST checks, refilled at HASH_CHECKS_PER_S each, one check at a time
    bound = 2 * HASH_BURST + 2 * HASH_CHECKS_PER_S * elapsed
    assert budget.checks <= bound
    assert statuses.count(401) + len(admin) >= budget.checks  # every check answered one request
    assert statuses.count(429) > 0
