"""The live dashboard through Flask's test client, on a store made by real traffic.

Authentication (401/403/429, hashes, the authorize callable, debug on loopback), CSRF, the
monitor switch reaching the recorder and the store, hostile ids and paths, escaping, the
security headers, and profile downloads opened by the real ``pyinstrument --load``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import (
    HOSTILE_ENDPOINT,
    HOSTILE_PARAM,
    HOSTILE_USER,
    SLOW_CHECKOUT_MS,
    SLOW_OUTLIERS_SQL,
    SLOW_QUERY_PATTERN,
    flush,
    regression_history,
    rows,
    shop_app,
)
from werkzeug.security import generate_password_hash

from flamewatch.flask_plugin import ConfigError, Flamewatch
from flamewatch.flask_plugin.auth import (
    FREE_FAILURES,
    HASH_BURST,
    MAX_DELAY_S,
    USER_FREE_FAILURES,
    Gate,
    HashBudget,
    LoginLimiter,
    network_of,
)
from flamewatch.flask_plugin.dashboard import Dashboard
from flamewatch.reports.site import endpoint_page, write_site

PREFIX = "/flamewatch"
USER, PASSWORD = "ops", "correct horse battery staple"


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def admin_by_header(request: Any) -> bool:
    """An ``authorize`` callable named by import path in a test: the app's own 'login'."""
    return request.headers.get("X-Admin") == "yes"


def user_by_header(request: Any) -> str | None:
    """An ``authorize`` callable that names the user, as an app's login would."""
    user = request.headers.get("X-User")
    return user if user in ("alice", "bob") else None


def broken_authorize(request: Any) -> bool:
    raise RuntimeError("the app's login is broken")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return regression_history(tmp_path_factory, "dashboard-history")


@pytest.fixture
def store(history: Path, tmp_path: Path) -> Path:
    """A copy of the history store for one test (the switch writes to it)."""
    copy = tmp_path / "store.sqlite3"
    shutil.copyfile(history, copy)
    return copy


@pytest.fixture
def make_dashboard_app(store: Path, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(*, testing: bool = True, debug: bool = False, **options: Any) -> Flask:
        app = shop_app("dashapp", tmp_path / "instance")
        app.config.update(TESTING=testing, DEBUG=debug)
        options.setdefault("database", str(store))
        options.setdefault("version", "3.0")
        Flamewatch(app, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["flamewatch"].close()


@pytest.fixture
def open_app(make_dashboard_app: Callable[..., Flask]) -> Flask:
    """No authentication configured, app.testing: the dashboard is open."""
    return make_dashboard_app()


@pytest.fixture
def client(open_app: Flask) -> FlaskClient:
    return open_app.test_client()


def _outlier_ids(store: Path) -> list[int]:
    """The slow checkouts' outliers (a loaded machine may flag a quick request too)."""
    return [r[0] for r in rows(store, SLOW_OUTLIERS_SQL, SLOW_CHECKOUT_MS, SLOW_QUERY_PATTERN)]


def _token(client: FlaskClient, **kwargs: Any) -> str:
    page = client.get(f"{PREFIX}/monitoring", **kwargs)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert match is not None
    return match[1]


def _monitored(store: Path, endpoint: str) -> bool:
    (row,) = rows(store, "SELECT monitored FROM endpoints WHERE name = ?", endpoint)
    return bool(row[0])


# -- the pages -------------------------------------------------------------------------------


def test_every_view_is_served_live_with_prefixed_links(client: FlaskClient, store: Path) -> None:
    pages = ["/", "/index.html", "/utilization.html", "/performance.html", "/versions.html"]
    pages += ["/outliers.html", "/monitoring", f"/{endpoint_page('checkout')}"]
    pages += [f"/outliers/{i}.html" for i in _outlier_ids(store)]
    for page in pages:
        response = client.get(PREFIX + page)
        assert response.status_code == 200, page
        assert response.mimetype == "text/html"
        assert f'href="{PREFIX}/assets/style.css"' in response.text
        assert f'href="{PREFIX}/monitoring"' in response.text  # the live-only page is in the nav
        for link in re.findall(r'(?:href|src)="([^"]+)"', response.text):
            assert link.startswith((f"{PREFIX}/", "#")), (page, link)
    assert "slow_checkout" in client.get(f"{PREFIX}/outliers/{_outlier_ids(store)[-1]}.html").text


def test_live_pages_are_the_static_sites_pages(
    make_dashboard_app: Callable[..., Flask], store: Path, tmp_path: Path
) -> None:
    """One code path: the endpoints table is the same, only its links carry the prefix."""
    app = make_dashboard_app(dashboard_cache_s=0)
    client = app.test_client()
    client.get(f"{PREFIX}/")  # starts the writer, which records the app's routes
    flush(app)
    site = write_site(str(store), tmp_path / "site").parent

    def table(html: str) -> str:
        match = re.search(r'<table class="sortable" id="endpoints">.*?</table>', html, re.DOTALL)
        assert match is not None
        return match[0]

    live = table(client.get(f"{PREFIX}/").text).replace(f'href="{PREFIX}/', 'href="')
    assert live == table((site / "index.html").read_text())
    assert "checkout" in live


def test_flamewatchs_own_routes_are_never_monitored(
    open_app: Flask, client: FlaskClient, store: Path
) -> None:
    before = len(rows(store))
    for page in ("/", "/monitoring", "/assets/site.js", "/outliers/999.html"):
        client.get(PREFIX + page)
    client.get("/")
    flush(open_app)
    names = [
        r[0]
        for r in rows(
            store,
            "SELECT e.name FROM requests r JOIN endpoints e ON e.id = r.endpoint_id WHERE r.id > ?",
            before,
        )
    ]
    assert names == ["index"]
    endpoints = [r[0] for r in rows(store, "SELECT name FROM endpoints")]
    assert not [name for name in endpoints if name.startswith("flamewatch")]


def test_pages_are_read_from_the_store_at_most_once_per_cache_period(
    make_dashboard_app: Callable[..., Flask], store: Path
) -> None:
    cached = make_dashboard_app(dashboard_cache_s=300)
    fresh = make_dashboard_app(dashboard_cache_s=0)

    def hits_of_index(app: Flask) -> int:
        html = app.test_client().get(f"{PREFIX}/monitoring").text
        row = re.search(r'<tr data-endpoint="index".*?</tr>', html, re.DOTALL)
        assert row is not None
        return int(re.findall(r'<td class="num">(\d+)</td>', row[0])[0])

    first = hits_of_index(cached)
    assert hits_of_index(fresh) == first
    for _ in range(3):
        cached.test_client().get("/")
    flush(cached)
    assert hits_of_index(cached) == first  # still the reading of a moment ago
    assert hits_of_index(fresh) == first + 3


# -- authentication --------------------------------------------------------------------------


def test_nothing_configured_outside_testing_is_403_saying_what_to_set(
    make_dashboard_app: Callable[..., Flask],
) -> None:
    client = make_dashboard_app(testing=False).test_client()
    for page in ("/", "/monitoring", "/assets/plotly.min.js"):
        response = client.get(PREFIX + page, headers=basic())
        assert response.status_code == 403
        assert "FLAMEWATCH_USERNAME and FLAMEWATCH_PASSWORD" in response.text
        assert "FLAMEWATCH_AUTHORIZE" in response.text
    assert client.get("/").text == "hello"  # the app itself is not concerned


@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("127.0.0.1", 200),
        ("::1", 200),
        ("::ffff:127.0.0.1", 200),
        ("203.0.113.9", 403),
        ("10.0.0.2", 403),
        ("::ffff:203.0.113.9", 403),
    ],
    ids=["ipv4-loopback", "ipv6-loopback", "mapped-loopback", "remote", "lan", "mapped-remote"],
)
def test_debug_mode_opens_the_dashboard_to_loopback_clients_only(
    make_dashboard_app: Callable[..., Flask], address: str, status: int
) -> None:
    client = make_dashboard_app(testing=False, debug=True).test_client()
    response = client.get(f"{PREFIX}/", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,
        generate_password_hash(PASSWORD, method="scrypt"),
        generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
    ],
    ids=["plain", "scrypt-hash", "pbkdf2-hash"],
)
def test_basic_authentication(make_dashboard_app: Callable[..., Flask], password: str) -> None:
    client = make_dashboard_app(username=USER, password=password).test_client()
    missing = client.get(f"{PREFIX}/")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith('Basic realm="flamewatch"')
    wrong = [basic(password="wrong"), basic(user="root"), basic(user=USER.upper())]
    if password != PASSWORD:
        wrong.append(basic(password=password))  # the hash itself is not the password
    for headers in wrong:
        response = client.get(f"{PREFIX}/", headers=headers)
        assert response.status_code == 401
        assert "WWW-Authenticate" in response.headers
    assert client.get(f"{PREFIX}/", headers={"Authorization": "Bearer abc"}).status_code == 401
    for page in ("/", "/monitoring", "/assets/site.js"):
        assert client.get(PREFIX + page, headers=basic()).status_code == 200
        assert client.get(PREFIX + page).status_code == 401  # everything is protected


def test_authorize_callable_by_import_path(make_dashboard_app: Callable[..., Flask]) -> None:
    client = make_dashboard_app(testing=False, authorize="test_dashboard:admin_by_header")
    app_client = client.test_client()
    assert app_client.get(f"{PREFIX}/", headers={"X-Admin": "yes"}).status_code == 200
    refused = app_client.get(f"{PREFIX}/", headers={"X-Admin": "no"})
    assert refused.status_code == 403
    assert "FLAMEWATCH_AUTHORIZE" in refused.text


def test_authorize_first_then_basic(make_dashboard_app: Callable[..., Flask]) -> None:
    app = make_dashboard_app(authorize=admin_by_header, username=USER, password=PASSWORD)
    client = app.test_client()
    assert client.get(f"{PREFIX}/", headers={"X-Admin": "yes"}).status_code == 200
    assert client.get(f"{PREFIX}/", headers=basic()).status_code == 200
    assert client.get(f"{PREFIX}/").status_code == 401


def test_a_failing_authorize_callable_refuses_and_is_logged(
    make_dashboard_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_dashboard_app(authorize=broken_authorize).test_client()
    assert client.get(f"{PREFIX}/").status_code == 403
    assert "the app's login is broken" in caplog.text
    assert client.get("/").text == "hello"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"username": USER}, "FLAMEWATCH_USERNAME is set but FLAMEWATCH_PASSWORD is not"),
        ({"password": PASSWORD}, "FLAMEWATCH_PASSWORD is set but FLAMEWATCH_USERNAME is not"),
        ({"username": USER, "password": ""}, "password (keyword argument) must be a non-empty"),
        ({"url_prefix": "flamewatch"}, "url_prefix (keyword argument) must be a URL path"),
        ({"url_prefix": "/"}, "url_prefix (keyword argument) must be a URL path"),
        ({"secret_key": "short"}, "secret_key (keyword argument) must be a string of at least"),
        ({"dashboard_cache_s": -1}, "dashboard_cache_s (keyword argument) must be a number"),
        ({"authorize": "no_such_module:f"}, "cannot import it"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_dashboard_settings_raise_at_init_app(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    app = Flask("bad", instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Flamewatch(app, **options)


SCRYPT_HASH = generate_password_hash(PASSWORD, method="scrypt")
PBKDF2_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (SCRYPT_HASH + "\n", "has white space around it (a newline read from a file?)"),
        (" " + PBKDF2_HASH, "has white space around it"),
        (SCRYPT_HASH.upper(), "the hash method is 'SCRYPT'"),
        (re.sub(r"[a-f](?=[0-9a-f]*$)", lambda m: m[0].upper(), SCRYPT_HASH), "lower-case hex"),
        (SCRYPT_HASH[:-2], "scrypt:N:r:p$salt$<128 lower-case hex digits>"),
        (SCRYPT_HASH.replace(":8:", ":x:"), "scrypt:N:r:p$salt$"),
        (SCRYPT_HASH.replace("scrypt:32768:", "scrypt:30000:"), "n must be a power of two"),
        (SCRYPT_HASH.replace("scrypt:32768:", "scrypt:1073741824:"), "at most 1024 MiB"),
        (PBKDF2_HASH[:-1], "pbkdf2:sha256:iterations$salt$<64 lower-case hex digits>"),
        (PBKDF2_HASH.replace("sha256", "sha512"), "<128 lower-case hex digits>"),
        (PBKDF2_HASH.replace("sha256", "nosuch"), "'nosuch' is not one hashlib knows"),
        (PBKDF2_HASH.replace("$", "$$", 1), "copy the whole output of"),
        ("pbkdf2:", "pbkdf2:sha256:iterations$salt$"),
    ],
    ids=lambda v: repr(v)[-30:],
)
def test_a_damaged_password_hash_is_a_config_error_not_a_plain_password(
    tmp_path: Path, password: str, message: str
) -> None:
    app = Flask("badhash", instance_path=str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        Flamewatch(app, username=USER, password=password)
    assert "password (keyword argument) must be" in str(raised.value)
    assert "got a value not shown" in str(raised.value)  # the hash is not in a log line


@pytest.mark.parametrize("password", ["scrypt is my password", "pbkdf2 rocks", "$crypt:x$y$z"])
def test_a_plain_password_that_merely_mentions_a_hash_method_is_plain(
    make_dashboard_app: Callable[..., Flask], password: str
) -> None:
    client = make_dashboard_app(username=USER, password=password).test_client()
    assert client.get(f"{PREFIX}/", headers=basic(password=password)).status_code == 200


def test_the_password_is_never_in_a_repr(make_dashboard_app: Callable[..., Flask]) -> None:
    app = make_dashboard_app(username=USER, password=PASSWORD, secret_key="k" * 20)
    assert PASSWORD not in repr(app.extensions["flamewatch"].settings)
    assert "k" * 20 not in repr(app.extensions["flamewatch"].settings)


class FakeClock:
    """A clock the test moves: waits and forgetting without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gate(app: Flask, clock: Callable[[], float] = time.monotonic, **budget: Any) -> Gate:
    """Give the app's dashboard a new gate on ``clock`` (and a hash budget of its own)."""
    (authenticate,) = app.before_request_funcs["flamewatch"]
    dashboard: Dashboard = authenticate.__self__  # type: ignore[attr-defined]
    dashboard.gate = Gate(dashboard.settings, clock, HashBudget(clock, **budget))
    return dashboard.gate


def _login(client: FlaskClient, address: str, password: str = PASSWORD, user: str = USER) -> int:
    page = client.get(
        f"{PREFIX}/", headers=basic(user, password), environ_base={"REMOTE_ADDR": address}
    )
    return page.status_code


def test_failures_from_one_network_make_it_wait_for_that_user_name_only(
    make_dashboard_app: Callable[..., Flask],
) -> None:
    app = make_dashboard_app(username=USER, password=PASSWORD)
    clock = FakeClock()
    _gate(app, clock)
    client = app.test_client()
    attacker, admin = "198.51.100.7", "198.51.100.8"
    for _ in range(FREE_FAILURES):
        assert _login(client, attacker, "guess") == 401
    waiting = client.get(f"{PREFIX}/", headers=basic(), environ_base={"REMOTE_ADDR": attacker})
    assert waiting.status_code == 429  # the right password from that network waits too
    assert waiting.headers["Retry-After"] == "1"
    assert "Too many failed logins for this user from your network" in waiting.text
    assert _login(client, admin) == 200  # another address: no wait
    assert _login(client, attacker, "guess", user="other") == 401  # another name: checked
    clock.now += 1
    assert _login(client, attacker) == 200  # after the wait the right password is taken
    for _ in range(FREE_FAILURES * 2):  # no credentials (a browser's first request): no failure
        assert client.get(f"{PREFIX}/", environ_base={"REMOTE_ADDR": admin}).status_code == 401
    assert _login(client, admin) == 200


def test_an_ipv6_client_is_counted_by_its_64(make_dashboard_app: Callable[..., Flask]) -> None:
    app = make_dashboard_app(username=USER, password=PASSWORD)
    _gate(app, FakeClock())
    client = app.test_client()
    for host in range(FREE_FAILURES):
        assert _login(client, f"2001:db8::{host + 1}", "guess") == 401
    assert _login(client, "2001:db8::99") == 429  # the same /64
    assert _login(client, "2001:db8:0:1::1") == 200  # the next /64
    assert network_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert network_of("2001:db8::1%eth0") == "2001:db8::/64"


def test_guessing_from_many_addresses_is_throttled_per_user_and_never_locks_the_admin_out(
    make_dashboard_app: Callable[..., Flask],
) -> None:
    app = make_dashboard_app(username=USER, password=PASSWORD)
    clock = FakeClock()
    _gate(app, clock)
    client = app.test_client()
    addresses = [f"127.0.0.{n}" for n in range(2, 42)]  # the 40 loopback addresses
    statuses = [_login(client, a, f"guess {i}") for a in addresses for i in range(FREE_FAILURES)]
    checked = statuses.count(401)
    assert statuses.count(429) == len(statuses) - checked
    # the first networks' free failures, then one guess for each other network
    assert checked == USER_FREE_FAILURES + len(addresses) - USER_FREE_FAILURES // FREE_FAILURES
    assert _login(client, addresses[-1]) == 429  # a network that failed waits, even if right
    assert _login(client, "127.0.0.200") == 200  # a network that has not failed: let in
    assert _login(client, "127.0.0.201", "guess") == 401  # ...and checked, once
    assert _login(client, "127.0.0.201", "guess") == 429
    clock.now += MAX_DELAY_S
    assert _login(client, addresses[0]) == 200  # at most five minutes after the last failure


def test_failure_delays_grow_are_forgotten_and_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock, max_entries=3)
    for _ in range(FREE_FAILURES):
        limiter.failed("a", USER)
    assert limiter.retry_after("a", USER) == 1
    assert limiter.retry_after("a", "someone else") == 0
    delays = []
    for _ in range(4):
        limiter.failed("a", USER)
        delays.append(limiter.retry_after("a", USER))
    assert delays == [2, 4, 8, 16]
    for _ in range(20):
        limiter.failed("a", USER)
    assert limiter.retry_after("a", USER) == MAX_DELAY_S  # capped at five minutes
    clock.now += MAX_DELAY_S + 1
    assert limiter.retry_after("a", USER) == 0  # waited long enough: one more try
    limiter.failed("a", USER)
    assert limiter.retry_after("a", USER) > 0
    assert limiter.has_failed("a")
    for _ in range(2000):  # a long attack: the delay stays capped (2.0 ** 1995 would overflow)
        limiter.failed("z", USER)
    assert limiter.retry_after("z", USER) == MAX_DELAY_S
    clock.now += 3601
    assert limiter.retry_after("a", USER) == 0
    assert not limiter.has_failed("a")  # forgotten after an hour
    limiter.failed("a", USER)
    assert limiter.retry_after("a", USER) == 0  # counting starts again
    for address in ("b", "c", "d", "e"):
        limiter.failed(address, address)
    assert len(limiter) == 3 * 3  # of each kind, the oldest is forgotten first
    assert not limiter.has_failed("b")
    limiter.succeeded("e", "e")
    assert not limiter.has_failed("e")
    assert len(limiter) == 3 * 3 - 2  # the user name's failures are kept


def test_hash_checks_are_budgeted_per_class_of_client(
    make_dashboard_app: Callable[..., Flask],
) -> None:
    app = make_dashboard_app(username=USER, password=generate_password_hash(PASSWORD))
    clock = FakeClock()  # never moves: no token comes back
    gate = _gate(app, clock)
    client = app.test_client()
    statuses = [_login(client, f"203.0.113.{n % 3}", "guess", user=f"u{n}") for n in range(40)]
    # each network's first guess is from the clean class, the rest from the suspect one
    assert statuses.count(401) == gate.budget.checks == 3 + HASH_BURST
    busy = client.get(f"{PREFIX}/", headers=basic(), environ_base={"REMOTE_ADDR": "203.0.113.1"})
    assert busy.status_code == 429
    assert "checking other logins" in busy.text
    assert _login(client, "192.0.2.50") == 200  # the clean class still had a check to spare
    for _ in range(5):
        assert _login(client, "192.0.2.50") == 200  # remembered: no further check
    assert gate.budget.checks == 3 + HASH_BURST + 1


def test_failed_logins_are_logged_at_most_once_a_minute(
    make_dashboard_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_dashboard_app(username=USER, password=PASSWORD)
    clock = FakeClock()
    _gate(app, clock)
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="flamewatch")
    hostile_user = "\x1b[31mroot" + "x" * 200
    for n in range(20):
        _login(client, "198.51.100.1", "guess", user=hostile_user if n == 0 else f"u{n % 3}")
    lines = [r.getMessage() for r in caplog.records if "failed dashboard login" in r.message]
    assert len(lines) == 1
    assert "\x1b" not in lines[0]
    assert "\\x1b[31mroot" in lines[0]  # escaped, and cut short:
    assert "x" * 65 not in lines[0]
    assert "198.51.100.1" in lines[0]
    clock.now += 61
    _login(client, "198.51.100.2", "guess")
    lines = [r.getMessage() for r in caplog.records if "failed dashboard login" in r.message]
    assert len(lines) == 2
    assert lines[1].endswith("(15 more failed and 4 refused since the last such line)")


# -- the monitor switch and CSRF -------------------------------------------------------------


def test_switching_an_endpoint_off_and_on(
    open_app: Flask, client: FlaskClient, store: Path
) -> None:
    token = _token(client)
    client.get("/items/1")
    response = client.post(
        f"{PREFIX}/monitoring", data={"csrf_token": token, "endpoint": "item", "monitored": "0"}
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"{PREFIX}/monitoring")
    assert not _monitored(store, "item")
    page = client.get(f"{PREFIX}/monitoring").text
    row = re.search(r'<tr data-endpoint="item".*?</tr>', page, re.DOTALL)
    assert row is not None
    assert "Turn on" in row[0]
    for i in range(3):
        client.get(f"/items/{i}")
        client.get("/")
    flush(open_app)
    recorded = [
        r[0]
        for r in rows(
            store,
            "SELECT e.name FROM requests r JOIN endpoints e"
            " ON e.id = r.endpoint_id WHERE e.name IN"
            " ('item', 'index') ORDER BY r.id DESC LIMIT 4",
        )
    ]
    assert recorded == ["index", "index", "index", "item"]  # the first /items/1 only
    client.post(
        f"{PREFIX}/monitoring", data={"csrf_token": token, "endpoint": "item", "monitored": "1"}
    )
    assert _monitored(store, "item")
    client.get("/items/9")
    flush(open_app)
    assert (
        rows(
            store,
            "SELECT e.name FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
            " ORDER BY r.id DESC LIMIT 1",
        )[0][0]
        == "item"
    )


@pytest.mark.parametrize(
    "token",
    [None, "", "0" * 64, "not-hex", "bob"],
    ids=["missing", "empty", "wrong", "garbage", "other-users"],
)
def test_the_switch_refuses_a_missing_wrong_or_other_users_token(
    make_dashboard_app: Callable[..., Flask], store: Path, token: str | None
) -> None:
    app = make_dashboard_app(authorize=user_by_header)
    client = app.test_client()
    client.get("/")
    flush(app)  # the writer has stored the app's routes
    alice, bob = {"X-User": "alice"}, {"X-User": "bob"}
    if token == "bob":
        token = _token(client, headers=bob)
        assert token != _token(client, headers=alice)
    data = {"endpoint": "item", "monitored": "0"}
    if token is not None:
        data["csrf_token"] = token
    refused = client.post(f"{PREFIX}/monitoring", data=data, headers=alice)
    assert refused.status_code == 403
    assert "CSRF token" in refused.text
    assert _monitored(store, "item")
    # a GET cannot switch anything, whatever it carries
    client.get(f"{PREFIX}/monitoring", query_string=data, headers=alice)
    assert _monitored(store, "item")
    data["csrf_token"] = _token(client, headers=alice)
    assert client.post(f"{PREFIX}/monitoring", data=data, headers=alice).status_code == 303
    assert not _monitored(store, "item")


def test_tokens_are_per_process_unless_a_key_is_shared(
    make_dashboard_app: Callable[..., Flask], store: Path
) -> None:
    """Two apps stand for two worker processes of one service."""
    data = {"endpoint": "item", "monitored": "0"}
    one, two = make_dashboard_app().test_client(), make_dashboard_app().test_client()
    data["csrf_token"] = _token(one)
    assert two.post(f"{PREFIX}/monitoring", data=data).status_code == 403
    key = "a shared key of the service"
    one, two = (make_dashboard_app(secret_key=key).test_client() for _ in range(2))
    data["csrf_token"] = _token(one)
    assert two.post(f"{PREFIX}/monitoring", data=data).status_code == 303
    assert not _monitored(store, "item")


@pytest.mark.parametrize(
    ("endpoint", "monitored", "status"),
    [
        ("no-such-endpoint", "0", 404),
        ("../../etc/passwd", "0", 404),
        ("static", "1", 400),
        ("flamewatch.toggle", "1", 400),
        ("item", "2", 400),
        ("item", None, 400),
        (None, "0", 400),
    ],
    ids=["unknown", "path", "excluded", "own", "bad-value", "no-value", "no-endpoint"],
)
def test_the_switch_refuses_what_it_cannot_switch(
    open_app: Flask,
    client: FlaskClient,
    store: Path,
    endpoint: str | None,
    monitored: str | None,
    status: int,
) -> None:
    client.get("/")
    flush(open_app)
    data = {"csrf_token": _token(client), "endpoint": endpoint, "monitored": monitored}
    sent = {k: v for k, v in data.items() if v is not None}
    assert client.post(f"{PREFIX}/monitoring", data=sent).status_code == status
    assert _monitored(store, "item")


def test_the_selection_lists_every_endpoint_with_its_facts(
    client: FlaskClient,
) -> None:
    page = client.get(f"{PREFIX}/monitoring").text
    names = re.findall(r'<tr data-endpoint="([^"]*)"', page)
    assert "item" in names  # not stored yet: from the app's URL map
    assert {"checkout", "index", "static"} <= set(names)
    assert not [name for name in names if name.startswith("flamewatch")]
    row = re.search(r'<tr data-endpoint="checkout".*?</tr>', page, re.DOTALL)
    assert row is not None
    assert "<code>/checkout</code>" in row[0]
    assert "GET, HEAD, OPTIONS" in row[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[0])  # last accessed
    assert '<td class="num">82</td>' in row[0]  # 2 x (40 + 1) hits
    static = re.search(r'<tr data-endpoint="static".*?</tr>', page, re.DOTALL)
    assert static is not None
    assert "excluded by the configuration" in static[0]
    assert "<form" not in static[0]


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/outliers/999999.html",
        "/outliers/0.html",
        "/outliers/-1.html",
        "/outliers/1abc.html",
        "/outliers/99999999999999999999999999.html",
        "/outliers/999999/profile.pyisession",
        "/outliers/1/profile.exe",
        "/outliers/1/../../../../etc/passwd",
        "/outliers/1/..%2f..%2f..%2fsite.py",
        "/endpoints/../../pyproject.toml",
        "/endpoints/..%2F..%2Fpyproject.toml",
        "/endpoints/%2e%2e%2fsite.py",
        "/endpoints/no-such-endpoint-00000000.html",
        "/assets/../site.py",
        "/assets/..%2fsite.py",
        "/assets/style.css%00.py",
        "/assets/aggregate.py",
        "/templates/base.html",
        "/../README.md",
        "/site.py",
        "/outliers/%2e%2e/%2e%2e/README.md",
        "/outliers/١٢٣.html",  # Arabic-Indic digits: str.isdigit() and \d take them
        "/outliers/\uff11/profile.pyisession",  # a full-width digit
    ],
)
def test_hostile_ids_and_paths_are_404_never_a_file(client: FlaskClient, path: str) -> None:
    response = client.get(PREFIX + path)
    assert response.status_code == 404, path
    body = response.get_data()
    for marker in (b"import ", b"[project]", b"root:", b"{% ", b"# flamewatch"):
        assert marker not in body, path


def test_an_outlier_id_is_ascii_digits_only(client: FlaskClient, store: Path) -> None:
    outlier = _outlier_ids(store)[-1]
    arabic = str(outlier).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert client.get(f"{PREFIX}/outliers/{outlier}.html").status_code == 200
    assert client.get(f"{PREFIX}/outliers/{arabic}.html").status_code == 404
    assert client.get(f"{PREFIX}/outliers/{arabic}/profile.pyisession").status_code == 404


def test_hostile_values_are_escaped_everywhere(client: FlaskClient, store: Path) -> None:
    pages = [
        "/",
        "/monitoring",
        "/outliers.html",
        "/versions.html",
        f"/{endpoint_page(HOSTILE_ENDPOINT)}",
        *(f"/outliers/{i}.html" for i in _outlier_ids(store)),
    ]
    seen_escaped = 0
    for page in pages:
        html = client.get(PREFIX + page).text
        for hostile in (HOSTILE_ENDPOINT, HOSTILE_USER, HOSTILE_PARAM, "<script>alert"):
            assert hostile not in html, (page, hostile)
        seen_escaped += html.count("&lt;script&gt;alert(&#39;endpoint&#39;)")
        assert not re.search(r"<script(?! src=| type=\"application/json\")", html), page
    assert seen_escaped >= 4
    page = client.get(f"{PREFIX}/monitoring").text
    assert 'data-endpoint="&lt;script&gt;alert(&#39;endpoint&#39;)&lt;/script&gt;"' in page
    assert 'value="&lt;script&gt;alert(&#39;endpoint&#39;)&lt;/script&gt;"' in page


def test_the_hostile_endpoint_can_be_switched_through_its_escaped_form(
    client: FlaskClient, store: Path
) -> None:
    response = client.post(
        f"{PREFIX}/monitoring",
        data={"csrf_token": _token(client), "endpoint": HOSTILE_ENDPOINT, "monitored": "0"},
    )
    assert response.status_code == 303
    assert not _monitored(store, HOSTILE_ENDPOINT)


# -- headers and downloads -------------------------------------------------------------------


def test_every_dashboard_response_is_private_nosniff_and_unframeable(
    make_dashboard_app: Callable[..., Flask], store: Path
) -> None:
    client = make_dashboard_app(username=USER, password=PASSWORD).test_client()
    outlier = _outlier_ids(store)[-1]
    responses = [
        client.get(f"{PREFIX}/"),  # 401
        client.get(f"{PREFIX}/", headers=basic()),
        client.get(f"{PREFIX}/monitoring", headers=basic()),
        client.get(f"{PREFIX}/outliers/999.html", headers=basic()),  # 404
        client.get(f"{PREFIX}/outliers/{outlier}/profile.pyisession", headers=basic()),
        client.post(f"{PREFIX}/monitoring", headers=basic()),  # 403, no token
        client.get(f"{PREFIX}/no/such/page", headers=basic()),  # 404: no rule matches
        client.get(f"{PREFIX}/no/such/page"),  # 404 too: nothing is asked before routing
        client.post(f"{PREFIX}/", headers=basic()),  # 405
        client.delete(f"{PREFIX}/monitoring"),  # 405
        client.get(PREFIX, headers=basic()),  # the redirect to the prefix's /
    ]
    statuses = [401, 200, 200, 404, 200, 403, 404, 404, 405, 405, 308]
    assert [r.status_code for r in responses] == statuses
    for _ in range(FREE_FAILURES + 1):
        responses.append(client.get(f"{PREFIX}/", headers=basic(password="guess")))
    assert responses[-1].status_code == 429
    for response in responses:
        assert "no-store" in response.headers.get("Cache-Control", ""), response
        assert "private" in response.headers["Cache-Control"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy  # no inline script, no eval
    asset = client.get(f"{PREFIX}/assets/plotly.min.js", headers=basic())
    assert asset.headers["Cache-Control"] == "private, no-cache"
    assert asset.mimetype == "text/javascript"
    again = client.get(
        f"{PREFIX}/assets/plotly.min.js",
        headers={**basic(), "If-None-Match": asset.headers["ETag"]},
    )
    assert again.status_code == 304
    app_page = client.get("/")
    assert "Content-Security-Policy" not in app_page.headers  # the app's own pages: untouched


def test_profile_downloads(
    client: FlaskClient, store: Path, tmp_path: Path, speedscope_schema: dict[str, Any]
) -> None:
    outlier = _outlier_ids(store)[-1]
    base = f"{PREFIX}/outliers/{outlier}"

    session = client.get(f"{base}/profile.pyisession")
    assert session.status_code == 200
    assert session.mimetype == "application/json"
    assert session.headers["Content-Disposition"] == (
        f'attachment; filename="flamewatch-outlier-{outlier}.pyisession"'
    )
    path = tmp_path / "downloaded.pyisession"
    path.write_bytes(session.get_data())
    cmd = [sys.executable, "-m", "pyinstrument", "--load", str(path), "-r", "text"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "slow_checkout" in done.stdout

    speedscope = client.get(f"{base}/profile.speedscope.json")
    assert speedscope.mimetype == "application/json"
    assert speedscope.headers["Content-Disposition"] == (
        f'attachment; filename="flamewatch-outlier-{outlier}.speedscope.json"'
    )
    document = json.loads(speedscope.get_data())
    jsonschema.Draft7Validator(speedscope_schema).validate(document)
    assert any(f["name"] == "slow_checkout" for f in document["shared"]["frames"])

    viewer = client.get(f"{base}/profile.html")
    assert viewer.mimetype == "text/html"
    assert viewer.headers["Content-Disposition"] == (
        f'inline; filename="flamewatch-outlier-{outlier}.html"'
    )
    assert viewer.headers["X-Frame-Options"] == "SAMEORIGIN"
    policy = viewer.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'self'" in policy
    assert "connect-src 'none'" in policy
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/]+=*'", policy)) == 3  # 2 scripts, 1 style
    assert b"slow_checkout" in viewer.get_data()


def test_aggregated_profile_exports_are_served_next_to_the_endpoint_page(
    client: FlaskClient, speedscope_schema: dict[str, Any]
) -> None:
    index = client.get(f"{PREFIX}/").get_data(as_text=True)
    pages = sorted(set(re.findall(r'href="[^"]*?(endpoints/[^"/]+\.html)"', index)))
    exports = []
    for page in pages:
        html = client.get(f"{PREFIX}/{page}").get_data(as_text=True)
        exports += re.findall(r'href="([^"]+/v[0-9]+\.(?:speedscope\.json|collapsed\.txt))"', html)
    assert exports, "the history's endpoints have aggregated profiles"
    for url in exports:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["Content-Disposition"].startswith('attachment; filename="'), url
        if url.endswith(".speedscope.json"):
            assert response.mimetype == "application/json"
            document = json.loads(response.get_data())
            jsonschema.Draft7Validator(speedscope_schema).validate(document)
            assert document["profiles"][0]["weights"], url
        else:
            assert response.mimetype == "text/plain"
            for line in response.get_data(as_text=True).splitlines():
                stack, _, weight = line.rpartition(" ")
                assert stack, line
                assert int(weight) >= 0, line
    assert all(url.startswith(f"{PREFIX}/endpoints/") for url in exports)
    folder = exports[0].rsplit("/", 2)[1]
    for missing in ("v999.speedscope.json", "v1.exe", "v0.collapsed.txt", "..%2f..%2fsite.py"):
        assert client.get(f"{PREFIX}/endpoints/{folder}/{missing}").status_code == 404
    assert client.get(f"{PREFIX}/endpoints/no-such-folder/v1.speedscope.json").status_code == 404


# -- settings --------------------------------------------------------------------------------


def test_dashboard_off_and_another_prefix(make_dashboard_app: Callable[..., Flask]) -> None:
    off = make_dashboard_app(dashboard=False).test_client()
    assert off.get(f"{PREFIX}/").status_code == 404
    assert off.get("/").text == "hello"
    moved = make_dashboard_app(url_prefix="/ops/perf/").test_client()
    assert moved.get(f"{PREFIX}/").status_code == 404
    page = moved.get("/ops/perf/")
    assert page.status_code == 200
    assert 'href="/ops/perf/assets/style.css"' in page.text


def test_an_unreadable_store_is_a_503_saying_to_wait(tmp_path: Path) -> None:
    database = tmp_path / "store.sqlite3"
    app = Flask("nostore", instance_path=str(tmp_path))
    app.config.update(TESTING=True)
    fw = Flamewatch(app, database=str(database))
    fw.close()  # the writer is gone: nothing creates the store again
    for path in tmp_path.glob("store.sqlite3*"):
        path.unlink()
    response = app.test_client().get(f"{PREFIX}/")
    assert response.status_code == 503
    assert "reload in a few seconds" in response.text
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_a_reading_is_reused_at_least_ten_times_as_long_as_it_took(open_app: Flask) -> None:
    ticks = [0.0]

    def clock() -> float:  # every look at the clock: 2 s later (a reading takes 2 s)
        ticks[0] += 2.0
        return ticks[0]

    dashboard = Dashboard(open_app.extensions["flamewatch"], clock=clock)
    first = dashboard.site()  # read at 2, took 2 s: reused until 2 + max(5, 10 * 2) = 22
    readings = [dashboard.site() for _ in range(12)]  # looks at 6, 8, ..., 20, then 22: read
    assert all(site is first for site in readings[:8])
    second = readings[8]
    assert second is not first
    assert all(site is second for site in readings[8:])  # read at 22: reused until 44
