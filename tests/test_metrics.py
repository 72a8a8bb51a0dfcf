"""``/flamewatch/metrics``: the store's latency histograms in Prometheus' and OpenMetrics' text,
read back with ``prometheus_client``'s own parsers, on both backends.

These tests write ``latency_total`` rows themselves (what the writer folds each request into),
from known durations, so that every cumulative count can be checked against the durations.
"""

from __future__ import annotations

import base64
import logging
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import Database
from metrics_scrape import DURATION, Histogram, scrape

from flamewatch.flask_plugin import ConfigError, Flamewatch
from flamewatch.flask_plugin.auth import FREE_FAILURES
from flamewatch.reports.metrics import (
    LE_BOUNDS_S,
    LE_BUCKETS,
    Metrics,
    MetricsCache,
    wants_openmetrics,
)
from flamewatch.sampler.histogram import GAMMA, bucket_of
from flamewatch.sampler.store import make_store, resolve_database
from flamewatch.sampler.store.connection import StoreConnection, open_connection

URL = "/flamewatch/metrics"
USER, PASSWORD = "ops", "correct horse battery staple"
TOKEN = "scrape-3b1f0c9e8d7a6b5c"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
#: a rule that would end the exposition early and add a series of its own, were it not escaped
HOSTILE_RULE = '/x"} 1\nfake_metric{a="b"} 99\n# EOF\n\\n\\"\r\u2028/<path:rest>'


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- a store with known histograms ---------------------------------------------------------------


class KnownStore:
    """A real store whose ``latency_total`` holds the histograms of durations the test chose,
    upserted bucket by bucket as the writer does."""

    def __init__(self, database: Database) -> None:
        self.url = resolve_database(str(database), ".")
        store = make_store(self.url)
        store.open()  # creates the schema
        store.close()
        self.durations: dict[tuple[str, str, str], list[float]] = {}

    def _conn(self) -> StoreConnection:
        return open_connection(self.url, readonly=False)

    def endpoint(self, name: str, *rules: str) -> int:
        conn = self._conn()
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO endpoints (name, first_seen, last_seen) VALUES (?, 0, 0)", (name,)
                )
                (endpoint_id,) = conn.execute(
                    "SELECT id FROM endpoints WHERE name = ?", (name,)
                ).fetchone()
                for seen, rule in enumerate(rules):
                    conn.execute(
                        "INSERT INTO rules (endpoint_id, rule, methods, first_seen, last_seen)"
                        " VALUES (?, ?, 'GET', ?, ?)",
                        (endpoint_id, rule, seen, seen),
                    )
            return int(endpoint_id)
        finally:
            conn.close()

    def serve(self, endpoint_id: int, method: str, status: int, durations: list[float]) -> None:
        conn = self._conn()
        try:
            with conn.transaction():
                for ms in durations:
                    conn.execute(
                        "INSERT INTO latency_total"
                        " (endpoint_id, method, status, bucket, count, sum_ms)"
                        " VALUES (?, ?, ?, ?, 1, ?)"
                        " ON CONFLICT (endpoint_id, method, status, bucket) DO UPDATE"
                        " SET count = latency_total.count + excluded.count,"
                        " sum_ms = latency_total.sum_ms + excluded.sum_ms",
                        (endpoint_id, method, status, bucket_of(ms), ms),
                    )
        finally:
            conn.close()

    def execute(self, sql: str, *params: Any) -> None:
        conn = self._conn()
        try:
            with conn.transaction():
                conn.execute(sql, params)
        finally:
            conn.close()


@pytest.fixture
def known(store_db: Database) -> KnownStore:
    return KnownStore(store_db)


@pytest.fixture
def make_metrics_app(store_db: Database, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """An app reading the store ``known`` wrote, with the dashboard settings a test gives."""
    apps: list[Flask] = []

    def make(*, testing: bool = True, **options: Any) -> Flask:
        app = Flask("metricsapp", instance_path=str(tmp_path / "instance"))
        app.config.update(TESTING=testing)
        Flamewatch(app, database=str(store_db), version="m1", **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["flamewatch"].close()


@pytest.fixture
def client(make_metrics_app: Callable[..., Flask]) -> FlaskClient:
    return make_metrics_app().test_client()


def expected_counts(durations: list[float]) -> list[int]:
    """The cumulative count under each ``le``, +Inf last, from the durations themselves."""
    return [sum(ms <= le * 1000 for ms in durations) for le in LE_BOUNDS_S] + [len(durations)]


def spread(rng: random.Random, n: int) -> list[float]:
    """``n`` durations log-uniform from 0.5 ms to 30 s: every ``le`` slot gets some."""
    return [math.exp(rng.uniform(math.log(0.5), math.log(30_000))) for _ in range(n)]


def check_exact(histogram: Histogram, durations: list[float]) -> None:
    assert histogram.cumulative() == expected_counts(durations)
    assert histogram.count == len(durations)
    assert histogram.sum == pytest.approx(sum(durations) / 1000, rel=1e-9)


# -- the exposition ------------------------------------------------------------------------------


def test_le_bounds_are_ddsketch_bounds_next_to_the_usual_ones() -> None:
    usual = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    assert len(LE_BOUNDS_S) == len(usual)
    for bucket, le, near in zip(LE_BUCKETS, LE_BOUNDS_S, usual, strict=True):
        assert le == GAMMA**bucket / 1000
        assert abs(math.log(le / near)) <= math.log(GAMMA) / 2  # the nearest bucket bound
        # the bucket ends exactly at le: le is in it, the next representable duration is not
        # (or, where the log rounds, one float later)
        assert bucket_of(le * 1000) == bucket
        assert bucket_of(le * 1000 * (1 + 1e-12)) == bucket + 1
        assert bucket_of(le * 1000 * (1 - 1e-12)) == bucket


def test_counts_under_each_le_are_exact_and_sums_add_up(
    known: KnownStore, client: FlaskClient
) -> None:
    rng = random.Random(15)
    home = known.endpoint("home", "/")
    item = known.endpoint("item", "/items/<int:item_id>")
    served = {
        ("/", "GET", "200"): spread(rng, 500),
        ("/", "HEAD", "200"): spread(rng, 7),
        ("/items/<int:item_id>", "GET", "200"): spread(rng, 300),
        ("/items/<int:item_id>", "GET", "404"): spread(rng, 40),
        ("/items/<int:item_id>", "POST", "500"): [10_000.0, 120_000.0],  # beyond the last le
    }
    for (route, method, status), durations in served.items():
        known.serve(home if route == "/" else item, method, int(status), durations)
    families, histograms = scrape(client)
    assert set(histograms) == set(served)
    for key, durations in served.items():
        check_exact(histograms[key], durations)
    assert families[DURATION].type == "histogram"
    assert families["flamewatch_dropped_records"].samples[0].value == 0


def test_openmetrics_when_the_scraper_prefers_it(known: KnownStore, client: FlaskClient) -> None:
    durations = spread(random.Random(2), 50)
    known.serve(known.endpoint("home", "/"), "GET", 200, durations)
    response = client.get(URL, headers={"Accept": PROMETHEUS_ACCEPT})
    assert response.content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert response.text.endswith("\n# EOF\n")
    assert f"# UNIT {DURATION} seconds\n" in response.text
    assert "Accept" in response.headers["Vary"]
    _, histograms = scrape(client, openmetrics=True)
    check_exact(histograms[("/", "GET", "200")], durations)
    plain = client.get(URL)
    assert plain.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in plain.text


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5", True),
        ("text/plain;version=0.0.4;q=1,*/*;q=0.1", False),
        ("*/*", False),
        ("", False),
        ("text/plain, application/openmetrics-text", False),  # a tie: the older format
        ("application/openmetrics-text;q=0.4, text/plain;q=0.5", False),
        ("application/openmetrics-text;q=nonsense", False),
    ],
)
def test_the_format_follows_the_accept_header(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus", "openmetrics"])
def test_a_hostile_route_is_one_escaped_label_value(
    known: KnownStore, client: FlaskClient, openmetrics: bool
) -> None:
    hostile = known.endpoint("hostile", HOSTILE_RULE)
    known.serve(hostile, "GET", 200, [1.0, 2.0, 3.0])
    families, histograms = scrape(client, openmetrics=openmetrics)
    assert set(families) == {DURATION, "flamewatch_dropped_records"}  # no fake_metric
    assert set(histograms) == {(HOSTILE_RULE, "GET", "200")}
    check_exact(histograms[(HOSTILE_RULE, "GET", "200")], [1.0, 2.0, 3.0])


def test_routes_methods_and_colliding_label_sets(known: KnownStore, client: FlaskClient) -> None:
    """An endpoint's several rules are joined (first seen first); one without a rule is named;
    an unknown method is _OTHER; equal label sets are one series, their histograms added."""
    several = known.endpoint("several", "/old", "/new")
    ruleless = known.endpoint("ruleless")
    on_host_a = known.endpoint("a.page", "/page")
    on_host_b = known.endpoint("b.page", "/page")
    known.serve(several, "GET", 200, [1.0])
    known.serve(ruleless, "GET", 200, [2.0])
    known.serve(ruleless, "PURGE", 200, [3.0])
    known.serve(ruleless, "BREW", 200, [4.0])
    known.serve(on_host_a, "GET", 200, [5.0, 6.0])
    known.serve(on_host_b, "GET", 200, [7.0])
    _, histograms = scrape(client)
    assert {key: h.count for key, h in histograms.items()} == {
        ("/old | /new", "GET", "200"): 1,
        ("ruleless", "GET", "200"): 1,
        ("ruleless", "_OTHER", "200"): 2,
        ("/page", "GET", "200"): 3,
    }
    check_exact(histograms[("/page", "GET", "200")], [5.0, 6.0, 7.0])


def test_the_metrics_are_read_from_the_histograms_alone(
    known: KnownStore, client: FlaskClient
) -> None:
    """Raw rows pruned, or never there: the counters stand (they are never pruned)."""
    durations = spread(random.Random(3), 80)
    known.serve(known.endpoint("home", "/"), "GET", 200, durations)
    known.execute("DELETE FROM outliers")
    known.execute("DELETE FROM requests")
    _, histograms = scrape(client)
    check_exact(histograms[("/", "GET", "200")], durations)


def test_dropped_records_are_summed_over_processes(
    known: KnownStore, make_metrics_app: Callable[..., Flask]
) -> None:
    known.execute(
        "INSERT INTO versions (name, source, first_seen, last_seen) VALUES ('x', 'c', 0, 0)"
    )
    for pid, dropped in ((1, 5), (2, 0), (3, 37)):
        known.execute(
            "INSERT INTO processes (hostname, pid, version_id, agent, started_at, last_seen,"
            " dropped) VALUES ('h', ?, (SELECT id FROM versions WHERE name = 'x'), 'a', 0, 0, ?)",
            pid,
            dropped,
        )
    families, _ = scrape(make_metrics_app().test_client())
    (sample,) = families["flamewatch_dropped_records"].samples
    assert sample.name == "flamewatch_dropped_records_total"
    assert sample.value == 42


def test_no_store_yet_is_an_exposition_without_series(tmp_path: Path) -> None:
    app = Flask("fresh", instance_path=str(tmp_path))
    app.config.update(TESTING=True)
    fw = Flamewatch(app, database=str(tmp_path / "not-yet.sqlite3"), version="v")
    try:
        families, histograms = scrape(app.test_client())
    finally:
        fw.close()
    assert histograms == {}
    assert families[DURATION].samples == []


def test_a_reading_is_reused_for_a_second() -> None:
    now = [100.0]
    reads: list[float] = []

    def read() -> Metrics:
        reads.append(now[0])
        return Metrics([], len(reads))

    cache = MetricsCache(read, ttl_s=1.0, clock=lambda: now[0])
    assert cache.get().dropped == 1
    now[0] += 0.75
    assert cache.get().dropped == 1
    now[0] += 0.25
    assert cache.get().dropped == 2
    assert reads == [100.0, 101.0]


def test_a_slow_reading_is_reused_ten_times_as_long_as_it_took() -> None:
    now = [0.0]

    def read() -> Metrics:
        now[0] += 0.5  # a big store: half a second to read
        return Metrics([], int(now[0] * 10))

    cache = MetricsCache(read, ttl_s=1.0, clock=lambda: now[0])
    assert cache.get().dropped == 5
    now[0] = 4.9
    assert cache.get().dropped == 5
    now[0] = 5.0
    assert cache.get().dropped == 55


# -- who may read it -----------------------------------------------------------------------------


def test_basic_auth_or_the_bearer_token(
    known: KnownStore, make_metrics_app: Callable[..., Flask]
) -> None:
    known.serve(known.endpoint("home", "/"), "GET", 200, [1.0, 2.0])
    app = make_metrics_app(username=USER, password=PASSWORD, metrics_token=TOKEN)
    client = app.test_client()
    missing = client.get(URL)
    assert missing.status_code == 401
    challenges = missing.headers.getlist("WWW-Authenticate")
    assert challenges[0].startswith('Basic realm="flamewatch"')
    assert challenges[1] == 'Bearer realm="flamewatch"'
    assert client.get(URL, headers=basic()).status_code == 200
    assert client.get(URL, headers=bearer()).status_code == 200
    assert client.get(URL, headers={"Authorization": f"bearer  {TOKEN} "}).status_code == 200
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), ""):
        refused = client.get(URL, headers=bearer(wrong))
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].endswith('error="invalid_token"')
    assert client.get(URL, headers=basic(password="wrong")).status_code == 401
    # the token opens the metrics only, never the dashboard's pages
    assert client.get("/flamewatch/", headers=bearer()).status_code == 401
    assert client.get("/flamewatch/monitoring", headers=bearer()).status_code == 401
    _, histograms = scrape(client, headers=bearer())
    assert histograms[("/", "GET", "200")].count == 2


def test_the_token_alone_outside_testing(
    known: KnownStore, make_metrics_app: Callable[..., Flask]
) -> None:
    client = make_metrics_app(testing=False, metrics_token=TOKEN).test_client()
    missing = client.get(URL)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="flamewatch"'
    assert "FLAMEWATCH_METRICS_TOKEN" in missing.text
    assert client.get(URL, headers=bearer()).status_code == 200
    assert client.get("/flamewatch/", headers=bearer()).status_code == 403  # nothing else


def test_wrong_tokens_are_throttled_and_logged_without_the_token(
    make_metrics_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_metrics_app(testing=False, metrics_token=TOKEN).test_client()
    caplog.set_level(logging.WARNING, logger="flamewatch")
    guesses = [f"guess-number-{n:04d}-abcdef" for n in range(FREE_FAILURES + 1)]
    statuses = [
        client.get(URL, headers=bearer(g), environ_base={"REMOTE_ADDR": "198.51.100.7"})
        for g in guesses
    ]
    assert [r.status_code for r in statuses] == [401] * FREE_FAILURES + [429]
    assert statuses[-1].headers["Retry-After"] == "1"
    # the right token from the throttled network waits too; from another network it is taken
    throttled = client.get(URL, headers=bearer(), environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert throttled.status_code == 429
    other = client.get(URL, headers=bearer(), environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert other.status_code == 200
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["flamewatch: wrong metrics token from '198.51.100.7'"]
    for guess in guesses:
        assert guess not in caplog.text
    assert TOKEN not in caplog.text


def test_metrics_responses_carry_the_dashboards_headers(
    make_metrics_app: Callable[..., Flask],
) -> None:
    client = make_metrics_app(username=USER, password=PASSWORD, metrics_token=TOKEN).test_client()
    responses = [
        client.get(URL),
        client.get(URL, headers=basic()),
        client.get(URL, headers=bearer()),
        client.get(URL, headers=bearer("wrong-token-0123456789")),
        client.post(URL, headers=bearer()),
    ]
    assert [r.status_code for r in responses] == [401, 200, 200, 401, 405]
    for response in responses:
        assert response.headers["Cache-Control"] == "private, no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        ("short", "it has 5 characters; make a random one"),
        ("x" * 15, "it has 15 characters"),
        (TOKEN + "\n", "white space or characters outside visible ASCII (a newline read"),
        ("a token with spaces", "white space"),
        ("jeton-de-métriques-secret", "outside visible ASCII"),
    ],
    ids=["short", "15-chars", "newline", "spaces", "non-ascii"],
)
def test_a_bad_token_is_a_config_error_that_never_shows_it(
    tmp_path: Path, token: str, detail: str
) -> None:
    app = Flask("badtoken", instance_path=str(tmp_path))
    app.config["FLAMEWATCH_METRICS_TOKEN"] = token
    with pytest.raises(ConfigError) as raised:
        Flamewatch(app)
    message = str(raised.value)
    assert message.startswith(
        "FLAMEWATCH_METRICS_TOKEN must be a string of at least 16 visible ASCII characters"
    )
    assert detail in message
    assert "got a value not shown" in message
    assert token.strip() not in message


def test_the_token_is_never_in_a_repr(make_metrics_app: Callable[..., Flask]) -> None:
    app = make_metrics_app(metrics_token=TOKEN)
    assert TOKEN not in repr(app.extensions["flamewatch"].settings)
