"""``/flamewatch/metrics`` end to end: requests served by real apps, folded into the store's
histograms by the real writer, read back with ``prometheus_client``'s parser -- in one process,
and across two processes (each a real threaded server) that share one store, on both backends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote
from urllib.request import Request, urlopen

import pytest
from flask import Flask, abort
from helpers import Database, flush, rows
from metrics_scrape import DURATION, Key, parse, scrape

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.metrics import LE_BUCKETS
from flamewatch.sampler.histogram import bucket_of

TOKEN = "scrape-9c2d4e6f8a0b1c3d"
#: a route that would add a series of its own and end the exposition, were it not escaped
HOSTILE_RULE = '/x"} 1\nfake_metric{a="b"} 99\n# EOF\n\\"/<path:rest>'

DURATIONS_SQL = (
    "SELECT COALESCE(ru.rule, e.name), r.method, r.status, r.duration_ms FROM requests r"
    " JOIN endpoints e ON e.id = r.endpoint_id LEFT JOIN rules ru ON ru.id = r.rule_id"
)


def stored_durations(database: Database) -> dict[Key, list[float]]:
    found: dict[Key, list[float]] = {}
    for route, method, status, ms in rows(database, DURATIONS_SQL):
        found.setdefault((route, method, str(status)), []).append(ms)
    return found


def shop(database: Database, instance: Path) -> Flask:
    app = Flask("metricsshop", instance_path=str(instance))
    app.config.update(TESTING=True)

    @app.get("/")
    def index() -> str:
        return "hello"

    @app.route("/items/<int:item_id>", methods=["GET", "PUT"])
    def item(item_id: int) -> str:
        if item_id > 100:
            abort(404)
        return "item"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("the view failed")

    @app.get(HOSTILE_RULE)
    def hostile(rest: str) -> str:
        return rest

    Flamewatch(app, database=str(database), version="e2e", flush_interval=0.05)
    return app


def test_counts_equal_the_requests_served_and_le_counts_the_stored_durations(
    store_db: Database, tmp_path: Path
) -> None:
    app = shop(store_db, tmp_path / "instance")
    client = app.test_client()
    served: Counter[Key] = Counter()
    try:
        for i in range(240):
            client.get("/")
            served["/", "GET", "200"] += 1
            client.get(f"/items/{i % 130}")
            served["/items/<int:item_id>", "GET", "200" if i % 130 <= 100 else "404"] += 1
            if i % 3 == 0:
                client.put("/items/7")
                served["/items/<int:item_id>", "PUT", "200"] += 1
            if i % 40 == 0:
                with pytest.raises(RuntimeError):
                    client.get("/boom")
                served["/boom", "GET", "500"] += 1
            if i % 10 == 0:
                client.get(quote(HOSTILE_RULE.replace("<path:rest>", f"r{i}")))
                served[HOSTILE_RULE, "GET", "200"] += 1
        flush(app)
        families, histograms = scrape(client)
    finally:
        app.extensions["flamewatch"].close()
    assert set(families) == {DURATION, "flamewatch_dropped_records"}  # no fake_metric
    assert {key: h.count for key, h in histograms.items()} == dict(served)
    durations = stored_durations(store_db)
    assert {key: len(d) for key, d in durations.items()} == dict(served)
    for key, histogram in histograms.items():
        buckets = [bucket_of(ms) for ms in durations[key]]
        expected = [sum(b <= le for b in buckets) for le in LE_BUCKETS] + [len(buckets)]
        assert histogram.cumulative() == expected, key
        assert histogram.sum == pytest.approx(sum(durations[key]) / 1000, rel=1e-9, abs=1e-12)


# -- two processes, one store ---------------------------------------------------------------------

SERVER = textwrap.dedent(
    """
    import os, sys
    from flask import Flask, request
    from werkzeug.serving import make_server
    from flamewatch.flask_plugin import Flamewatch

    app = Flask("metrics_" + os.environ["FW_NAME"])

    @app.get("/")
    def index():
        return "hello"

    @app.route("/items/<int:item_id>", methods=["GET", "POST"])
    def item(item_id):
        return ("created", 201) if request.method == "POST" else "item"

    @app.post("/flush")
    def flush():
        return "ok" if app.extensions["flamewatch"].flush(timeout=30) else ("failed", 500)

    Flamewatch(
        app,
        database=os.environ["FW_DATABASE"],
        version=os.environ["FW_NAME"],
        exclude=["flush"],
        metrics_token=os.environ["FW_TOKEN"],
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)


class Server:
    """One app in its own process, on a free loopback port."""

    def __init__(self, tmp: Path, name: str, database: Database) -> None:
        script = tmp / "metrics_server.py"
        script.write_text(SERVER)
        env = {
            **os.environ,
            "FW_NAME": name,
            "FW_DATABASE": str(database),
            "FW_TOKEN": TOKEN,
        }
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=log
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, self.log.read_text()
        self.base = f"http://127.0.0.1:{int(line)}"

    def call(self, method: str, path: str, headers: dict[str, str] | None = None) -> str:
        request = Request(self.base + path, method=method, headers=headers or {})
        with urlopen(request, timeout=60) as response:
            body: bytes = response.read()
            return body.decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str, Database], Server]]:
    started: list[Server] = []

    def start(name: str, database: Database) -> Server:
        server = Server(tmp_path, name, database)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_two_processes_on_one_store_each_serve_the_sum(
    store_db: Database, start_server: Callable[[str, Database], Server]
) -> None:
    first = start_server("one", store_db)
    first.call("GET", "/")  # the first creates the store before the second opens it
    first.call("POST", "/flush")
    second = start_server("two", store_db)
    plan = (
        [(first, "GET", "/")] * 149
        + [(first, "GET", "/items/3")] * 60
        + [(second, "GET", "/")] * 90
        + [(second, "GET", "/items/4")] * 75
        + [(second, "POST", "/items/5")] * 40
        + [(first, "POST", "/items/6")] * 11
    )
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda step: step[0].call(step[1], step[2]), plan))
    for server in (first, second):
        assert server.call("POST", "/flush") == "ok"
    expected = {
        ("/", "GET", "200"): 150 + 90,
        ("/items/<int:item_id>", "GET", "200"): 60 + 75,
        ("/items/<int:item_id>", "POST", "201"): 40 + 11,
    }
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    readings = []
    for server in (first, second):
        families, histograms = parse(server.call("GET", "/flamewatch/metrics", bearer))
        assert {key: h.count for key, h in histograms.items()} == expected
        assert families["flamewatch_dropped_records"].samples[0].value == 0
        readings.append({key: (h.cumulative(), h.sum) for key, h in histograms.items()})
    assert readings[0] == readings[1]  # the same numbers, whichever process is asked
    durations = stored_durations(store_db)
    assert {key: len(d) for key, d in durations.items()} == expected
    for key, (cumulative, total_s) in readings[0].items():
        buckets = [bucket_of(ms) for ms in durations[key]]
        assert cumulative == [sum(b <= le for b in buckets) for le in LE_BUCKETS] + [len(buckets)]
        assert total_s == pytest.approx(sum(durations[key]) / 1000, rel=1e-9)
    pids = rows(
        store_db, "SELECT DISTINCT p.pid FROM requests r JOIN processes p ON p.id = r.process_id"
    )
    assert {pid for (pid,) in pids} == {first.process.pid, second.process.pid}
    for server in (first, second):
        server.stop()
        log = server.log.read_text()
        assert "Traceback" not in log, log
        assert "flamewatch:" not in log, log  # nothing failed, nothing was dropped
