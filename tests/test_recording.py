"""Every request to a monitored endpoint is timed as a whole and stored."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, Response, abort, g, redirect, request, stream_with_context
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from helpers import fetch_concurrently, flush, rows, stored

from flamewatch.flask_plugin import Flamewatch
from flamewatch.sampler import logs
from flamewatch.sampler.store import make_store, resolve_database


@pytest.fixture
def db_path(store_db: Path | str) -> Path | str:
    """The store of every test here: a SQLite file, then a PostgreSQL database."""
    return store_db


def test_request_is_stored_with_its_facts(app: Flask, db_path: Path) -> None:
    before = time.time()
    response = app.test_client().get("/items/7", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.json == {"id": 7}
    flush(app)

    (row,) = stored(db_path)
    assert row["endpoint"] == "item"
    assert row["rule"] == "/items/<int:item_id>"
    assert row["method"] == "GET"
    assert row["status"] == 200
    assert before <= row["started_at"] <= time.time()
    assert 0 < row["duration_ms"] < 5_000
    assert row["version"] == "v1"
    assert row["client_ip"] == "203.0.113.9"
    assert row["grp"] == "203.0.113.9"  # no group_by: the client address
    assert row["hostname"] == socket.gethostname()
    assert row["is_outlier"] == 0
    assert row["threshold_ms"] is None  # still warming up


def test_duration_covers_hooks_around_the_view(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.before_request
    def slow_before() -> None:
        time.sleep(0.03)

    @app.after_request
    def slow_after(response: Response) -> Response:
        time.sleep(0.03)
        return response

    Flamewatch(app)
    app.test_client().get("/")
    flush(app)
    (row,) = stored(db_path)
    assert row["duration_ms"] >= 60


def test_view_exception_propagates_and_is_recorded_as_500(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.get("/boom")
    def boom() -> str:
        raise KeyError("boom")

    Flamewatch(app)
    with pytest.raises(KeyError, match="boom"):  # TESTING propagates, as without flamewatch
        app.test_client().get("/boom")
    app.config["TESTING"] = False
    assert app.test_client().get("/boom").status_code == 500
    flush(app)
    assert [(r["endpoint"], r["status"]) for r in stored(db_path)] == [("boom", 500)] * 2


def test_abort_redirect_and_error_handlers_keep_their_status(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    class Teapot(Exception):
        pass

    @app.errorhandler(Teapot)
    def teapot(_: Teapot) -> tuple[str, int]:
        return "short and stout", 418

    @app.get("/gone")
    def gone() -> str:
        abort(410)

    @app.get("/old")
    def old() -> Response:
        return redirect("/", 302)  # type: ignore[return-value]

    @app.get("/tea")
    def tea() -> str:
        raise Teapot()

    Flamewatch(app)
    client = app.test_client()
    assert client.get("/gone").status_code == 410
    assert client.get("/old").status_code == 302
    assert client.get("/tea").text == "short and stout"
    assert client.get("/no/such/page").status_code == 404
    assert client.post("/").status_code == 405
    flush(app)
    got = [(r["endpoint"], r["status"]) for r in stored(db_path)]
    # unmatched URLs and wrong methods belong to no endpoint and are not recorded
    assert got == [("gone", 410), ("old", 302), ("tea", 418)]


def test_request_answered_by_before_request_is_recorded(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.before_request
    def guard() -> tuple[str, int] | None:
        return ("no", 401) if request.args.get("deny") else None

    Flamewatch(app)
    assert app.test_client().get("/?deny=1").status_code == 401
    flush(app)
    assert [(r["endpoint"], r["status"]) for r in stored(db_path)] == [("index", 401)]


def test_the_environ_holds_no_flamewatch_key_while_flask_reads_the_headers(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    # werkzeug looks for the cookie header through every key of the environ when the session
    # opens: a key of flamewatch's there would cost every request ~600 CPU instructions
    app = make_app(init=False)
    seen: list[list[str]] = []

    class Looking(SecureCookieSessionInterface):
        def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
            seen.append([k for k in request.environ if k.startswith("flamewatch")])
            return super().open_session(app, request)

    app.session_interface = Looking()
    Flamewatch(app)
    app.test_client().get("/")
    flush(app)
    assert seen == [[]]
    (row,) = stored(db_path)
    assert row["endpoint"] == "index"


def test_a_request_the_app_answers_before_dispatch_leaves_nothing_behind(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)
    inner = app.wsgi_app

    def maintenance(environ: dict[str, Any], start_response: Any) -> Any:
        """A middleware under flamewatch's that answers some requests itself."""
        if environ["PATH_INFO"] == "/down":
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        if environ["PATH_INFO"] == "/broken":
            raise RuntimeError("broken before dispatch")
        return inner(environ, start_response)

    app.wsgi_app = maintenance  # type: ignore[method-assign]
    Flamewatch(app)
    client = app.test_client()
    assert client.get("/down").status_code == 503
    with pytest.raises(RuntimeError, match="broken before dispatch"):
        client.get("/broken")
    recorder = app.extensions["flamewatch"].recorder
    assert recorder.starts == {}
    time.sleep(0.05)  # a start left behind would make the next request look this slow
    assert client.get("/").status_code == 200
    flush(app)
    (row,) = stored(db_path)
    assert row["endpoint"] == "index"
    assert row["duration_ms"] < 40
    assert recorder.starts == {}
    assert recorder.inflight == {}


def test_dispatch_without_the_middleware_is_not_recorded(app: Flask, db_path: Path) -> None:
    with app.test_request_context("/"):
        response = app.full_dispatch_request()
    assert response.get_data() == b"hello"
    app.test_client().get("/items/3")
    flush(app)
    assert [r["endpoint"] for r in stored(db_path)] == ["item"]


def test_a_request_made_inside_a_request_on_the_same_thread_is_recorded_too(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.get("/outer")
    def outer() -> str:
        time.sleep(0.02)
        inner = app.test_client().get("/items/5").get_data(as_text=True)
        time.sleep(0.02)
        return "outer around " + inner

    Flamewatch(app)
    assert app.test_client().get("/outer").status_code == 200
    flush(app)
    by_endpoint = {r["endpoint"]: r for r in stored(db_path)}
    assert set(by_endpoint) == {"outer", "item"}
    assert by_endpoint["outer"]["duration_ms"] >= 40 + by_endpoint["item"]["duration_ms"]
    assert by_endpoint["outer"]["started_at"] <= by_endpoint["item"]["started_at"]
    recorder = app.extensions["flamewatch"].recorder
    assert recorder.starts == {}
    assert recorder.inflight == {}


def test_two_greenlets_of_one_thread_interleaved_are_both_recorded(
    make_app: Callable[..., Flask], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What gevent's monkey-patching does to threading.get_ident, for this test's thread only:
    # a greenlet's id. Patched after flamewatch was imported, as it may be in an app.
    real_ident, main = threading.get_ident, threading.get_ident()
    greenlet = [0]

    def get_ident() -> int:
        return (greenlet[0] or main) if real_ident() == main else real_ident()

    monkeypatch.setattr(threading, "get_ident", get_ident)
    app = make_app(init=False)

    class Switching(SecureCookieSessionInterface):
        def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
            if request.path == "/" and not greenlet[0]:
                # the first request waits here (a session store's I/O): another greenlet runs
                greenlet[0] = 2
                try:
                    app.test_client().get("/items/9")
                finally:
                    greenlet[0] = 0
            return super().open_session(app, request)

    app.session_interface = Switching()
    Flamewatch(app)
    try:
        assert app.test_client().get("/").status_code == 200
    finally:
        monkeypatch.undo()
        threading._active.pop(2, None)  # type: ignore[attr-defined]
    flush(app)
    by_endpoint = {r["endpoint"]: r for r in stored(db_path)}
    assert set(by_endpoint) == {"index", "item"}
    assert by_endpoint["index"]["duration_ms"] >= by_endpoint["item"]["duration_ms"]


def test_streamed_response_is_timed_until_the_stream_ends(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for i in range(5):
                time.sleep(0.01)
                yield f"{i}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    Flamewatch(app)
    with app.test_client().get("/stream") as response:
        assert response.is_streamed
        flush(app)
        assert stored(db_path) == []  # still streaming: not finished, not recorded
        assert response.text == "0\n1\n2\n3\n4\n"
    flush(app)
    (row,) = stored(db_path)
    assert (row["endpoint"], row["status"]) == ("stream", 200)
    assert row["duration_ms"] >= 50


def test_stream_closed_early_is_recorded_once(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False)

    @app.get("/endless")
    def endless() -> Response:
        def forever() -> Iterator[bytes]:
            while True:
                yield b"x"

        return Response(forever())

    Flamewatch(app)
    response = app.test_client().get("/endless")
    iterator = response.iter_encoded()
    assert next(iterator) == b"x"
    response.close()
    response.close()
    flush(app)
    assert [r["endpoint"] for r in stored(db_path)] == ["endless"]


def test_async_view_works_and_is_recorded(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = make_app(init=False)

    @app.get("/async")
    async def async_view() -> str:
        await asyncio.sleep(0.02)
        return "awaited"

    Flamewatch(app)
    assert app.test_client().get("/async").text == "awaited"
    flush(app)
    (row,) = stored(db_path)
    assert (row["endpoint"], row["status"]) == ("async_view", 200)
    assert row["duration_ms"] >= 20


def test_blueprint_endpoints_are_recorded(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = make_app(init=False)
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/ping")
    def ping() -> str:
        return "pong"

    app.register_blueprint(api)
    Flamewatch(app)
    assert app.test_client().get("/api/ping").text == "pong"
    flush(app)
    (row,) = stored(db_path)
    assert (row["endpoint"], row["rule"]) == ("api.ping", "/api/ping")


def test_endpoints_registered_after_init_app_are_discovered_and_recorded(
    app: Flask, db_path: Path
) -> None:
    @app.route("/late", methods=["GET", "POST"])
    def late() -> str:
        return "late"

    client = app.test_client()
    assert client.post("/late").text == "late"
    flush(app)
    assert [r["endpoint"] for r in stored(db_path)] == ["late"]
    endpoints = {
        r["name"]: (r["rule"], r["methods"], r["monitored"])
        for r in rows(
            db_path,
            "SELECT e.name, r.rule, r.methods, e.monitored"
            " FROM endpoints e JOIN rules r ON r.endpoint_id = e.id",
        )
    }
    assert endpoints == {
        "index": ("/", "GET,HEAD,OPTIONS", 1),
        "item": ("/items/<int:item_id>", "GET,HEAD,OPTIONS", 1),
        "late": ("/late", "GET,HEAD,OPTIONS,POST", 1),
        "static": ("/static/<path:filename>", "GET,HEAD,OPTIONS", 0),
    }
    (seen,) = rows(
        db_path, "SELECT first_seen, last_seen, last_accessed FROM endpoints WHERE name = 'late'"
    )
    assert seen["first_seen"] <= seen["last_seen"]
    assert seen["last_accessed"] is not None


def test_static_and_excluded_endpoints_are_not_recorded(
    make_app: Callable[..., Flask], db_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "a.txt").write_text("static file")
    app = make_app(exclude=["item", "health*"], init=False)
    app.static_folder = str(tmp_path / "static")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    Flamewatch(app)
    client = app.test_client()
    with client.get("/static/a.txt") as response:
        assert response.text == "static file"
    client.get("/items/1")
    client.get("/healthz")
    client.get("/")
    flush(app)
    assert [r["endpoint"] for r in stored(db_path)] == ["index"]
    flags = dict(rows(db_path, "SELECT name, monitored FROM endpoints"))  # type: ignore[arg-type]
    assert flags == {"index": 1, "item": 0, "healthz": 0, "static": 0}


def test_monitor_flag_in_the_store_switches_an_endpoint_off(app: Flask, db_path: Path) -> None:
    client = app.test_client()
    client.get("/")
    flush(app)

    conn_store = make_store(resolve_database(str(db_path), "."))
    conn_store.open()
    try:
        conn_store.set_monitored("index", False)
    finally:
        conn_store.close()
    flush(app)  # a flush also reads the flags
    client.get("/")
    client.get("/items/3")
    flush(app)
    assert [r["endpoint"] for r in stored(db_path)] == ["index", "item"]


def test_group_by_names_the_user(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = make_app(init=False)

    @app.before_request
    def login() -> None:
        g.user = request.headers.get("X-User")

    Flamewatch(app, group_by=lambda req: g.user)
    client = app.test_client()
    client.get("/", headers={"X-User": "alice"})
    client.get("/", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    flush(app)
    assert [r["grp"] for r in stored(db_path)] == ["alice", "198.51.100.4"]


def test_group_by_from_config_import_path(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = make_app(group_by="helpers:group_from_header")
    app.test_client().get("/", headers={"X-Team": "blue"})
    flush(app)
    assert [r["grp"] for r in stored(db_path)] == ["team-blue"]


def test_failing_group_by_is_logged_and_the_request_served(
    make_app: Callable[..., Flask],
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "_last_logged", {})  # a fresh minute of rate limiting
    app = make_app(init=False)

    def broken(req: object) -> str:
        raise RuntimeError("group_by bug")

    Flamewatch(app, group_by=broken)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flamewatch"):
        responses = [client.get("/") for _ in range(5)]
    assert [r.text for r in responses] == ["hello"] * 5
    assert len([r for r in caplog.records if "group_by" in r.getMessage()]) == 1  # rate-limited
    flush(app)
    assert [r["grp"] for r in stored(db_path)] == ["127.0.0.1"] * 5


def test_32_threads_of_500_requests_store_exactly_16000_rows(app: Flask, db_path: Path) -> None:
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        client = app.test_client()
        try:
            for i in range(500):
                response = client.get(f"/items/{n * 1000 + i}")
                assert response.status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    flush(app)
    ((count, distinct, dropped),) = rows(
        db_path,
        "SELECT count(*), count(DISTINCT duration_ms || ':' || started_at),"
        " (SELECT sum(dropped) FROM processes) FROM requests",
    )
    assert count == 16_000
    assert dropped == 0
    assert distinct > 15_000  # distinct requests, not one record repeated


def test_real_threaded_server_with_concurrent_clients(app: Flask, db_path: Path) -> None:
    bodies = fetch_concurrently(app, [f"/items/{i}" for i in range(400)])
    assert len(bodies) == 400
    flush(app)
    got = stored(db_path)
    assert len(got) == 400
    assert {r["client_ip"] for r in got} == {"127.0.0.1"}
