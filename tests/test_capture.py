"""Outliers keep a real pyinstrument profile, their load and their redacted params."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest
from click.testing import CliRunner
from flask import Flask, Response, request, stream_with_context
from helpers import fetch_concurrently, flush, rows, warm

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.cli import main
from flamewatch.reports.outliers import list_outliers, load_outlier, load_session


@pytest.fixture
def db_path(store_db: Path | str) -> Path | str:
    """The store of every test here: a SQLite file, then a PostgreSQL database."""
    return store_db


#: how long the slow views take: long enough that, on a loaded machine, the time a concurrent
#: request spends outside its slow function (queueing, Flask, the GIL) stays a small share
SLOW_S = 0.3


def wait_for_the_payment_gateway() -> None:
    time.sleep(SLOW_S)


def render_the_giant_report() -> None:
    time.sleep(SLOW_S)


def hold_the_gil_in_c() -> int:
    return sum(range(20_000_000))  # a C loop: no bytecode, no GIL switch, no sample


def after_the_c_call() -> None:
    time.sleep(0.03)


def _outlier_app(make_app: Callable[..., Flask], **config: Any) -> Flask:
    app = make_app(init=False, outlier_warmup=10, **config)

    @app.route("/pay", methods=["GET", "POST"])
    def pay() -> str:
        if request.args.get("slow"):
            wait_for_the_payment_gateway()
        return "paid"

    @app.get("/report")
    def report() -> str:
        if request.args.get("slow"):
            render_the_giant_report()
        return "report"

    @app.get("/c")
    def c_loop() -> str:
        if request.args.get("slow"):
            hold_the_gil_in_c()
            after_the_c_call()
        return "c"

    Flamewatch(app)
    return app


def _profile_text(db_path: Path, outlier_id: int, tmp_path: Path) -> str:
    out = tmp_path / f"outlier-{outlier_id}.pyisession"
    result = CliRunner().invoke(
        main, ["profile", str(outlier_id), "-d", str(db_path), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return subprocess.run(
        [sys.executable, "-m", "pyinstrument", "--load", str(out), "-r", "text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _share(session: Any, function: str) -> float:
    """The share of a session's time spent in (and under) frames of ``function``."""
    total = sum(seconds for _, seconds in session.frame_records)
    inside = sum(
        seconds
        for stack, seconds in session.frame_records
        if any(frame.split("\x00", 1)[0] == function for frame in stack)
    )
    return inside / total


def test_outlier_profile_names_the_slow_function(
    make_app: Callable[..., Flask], db_path: Path, tmp_path: Path
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/pay"], SLOW_S)
    app.test_client().get("/pay?slow=1")
    flush(app)

    (outlier,) = list_outliers(str(db_path))
    assert (outlier.endpoint, outlier.path, outlier.status) == ("pay", "/pay", 200)
    assert outlier.duration_ms >= SLOW_S * 1000 > (outlier.threshold_ms or 0)
    text = _profile_text(db_path, outlier.id, tmp_path)
    assert "wait_for_the_payment_gateway" in text
    assert "GET /pay (pay, version v1)" in text

    session = load_session(str(db_path), outlier.id)
    assert _share(session, "wait_for_the_payment_gateway") >= 0.8
    total = sum(seconds for _, seconds in session.frame_records)
    assert total == pytest.approx(outlier.duration_ms / 1000, rel=0.02)  # the whole request
    stored = load_outlier(str(db_path), outlier.id)
    assert stored["threshold_stack"][-1].startswith("wait_for_the_payment_gateway\x00")


def test_concurrent_outliers_on_a_real_server_each_profile_their_own_thread(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/pay", "/report"], SLOW_S)
    fetch_concurrently(app, ["/pay?slow=1", "/report?slow=1"] * 3 + ["/pay", "/report"] * 20)
    flush(app)
    # under this load a normal request may be an outlier too; the slow ones must all be there
    captured = [o for o in list_outliers(str(db_path)) if o.duration_ms >= SLOW_S * 1000]
    assert sorted(o.endpoint for o in captured) == ["pay"] * 3 + ["report"] * 3
    expected = {"pay": "wait_for_the_payment_gateway", "report": "render_the_giant_report"}
    for outlier in captured:
        session = load_session(str(db_path), outlier.id)
        # Measured within the view: the time before it (a thread of the busy server waiting to
        # run Flask) is part of the request but says nothing about whose samples these are.
        in_view = _share(session, outlier.endpoint)
        assert in_view >= 0.4
        assert _share(session, expected[outlier.endpoint]) >= 0.8 * in_view
        other = next(f for e, f in expected.items() if e != outlier.endpoint)
        assert _share(session, other) == 0  # samples of another thread never leak in


def test_time_in_c_holding_the_gil_goes_to_unsampled(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/c"], SLOW_S)
    app.test_client().get("/c?slow=1")
    flush(app)
    (outlier,) = list_outliers(str(db_path))
    session = load_session(str(db_path), outlier.id)
    unsampled = _share(session, "[unsampled]")
    # the sampler first got the GIL when the thread was already in after_the_c_call: the C
    # loop's time is honestly unattributed, not charged to that next stack
    assert unsampled > 0.5
    assert _share(session, "after_the_c_call") < 0.4
    assert _share(session, "c_loop") + unsampled == pytest.approx(1.0, abs=0.05)


def test_speedscope_and_html_exports_of_a_stored_outlier(
    make_app: Callable[..., Flask],
    db_path: Path,
    tmp_path: Path,
    speedscope_schema: dict[str, Any],
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/report"], SLOW_S)
    app.test_client().get("/report?slow=1")
    flush(app)
    (outlier,) = list_outliers(str(db_path))
    for fmt, name in (("speedscope", "p.speedscope.json"), ("html", "p.html")):
        result = CliRunner().invoke(
            main,
            ["profile", str(outlier.id), "-d", str(db_path), "-f", fmt, "-o", str(tmp_path / name)],
        )
        assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "p.speedscope.json").read_text())
    jsonschema.Draft7Validator(speedscope_schema).validate(document)
    assert "render_the_giant_report" in [f["name"] for f in document["shared"]["frames"]]
    html = (tmp_path / "p.html").read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "render_the_giant_report" in html


def test_cpu_and_memory_of_an_outlier_are_plausible(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/pay"], SLOW_S)
    app.test_client().get("/pay?slow=1")
    flush(app)
    (outlier,) = list_outliers(str(db_path))
    load = load_outlier(str(db_path), outlier.id)["resources"]
    assert 10 * 2**20 < load["rss_bytes"] < psutil.virtual_memory().total
    assert 0 < load["available_bytes"] <= psutil.virtual_memory().total
    assert load["threads"] >= 3  # main, writer, sampler
    assert len(load["load_average"]) == 3
    assert load["cpu_span_s"] > 0
    assert 0 <= load["system_cpu_percent"] <= 100
    assert 0 <= load["process_cpu_percent"] <= 100 * load["cpu_count"] * 1.2


def test_secrets_are_nowhere_in_the_store(
    make_app: Callable[..., Flask], db_path: Path, tmp_path: Path
) -> None:
    app = _outlier_app(
        make_app,
        capture_headers=["User-Agent", "X-Api-Key", "Authorization"],
        redact="favourite_colour",  # a key of the user's own, besides the defaults
    )
    warm(app, ["/pay"], SLOW_S)
    secrets = {
        "query": "q-s3cr3t-token-value",
        "form": "f-hunter2-password",
        "nested": "n-deep-api-key-value",
        "header": "h-header-key-value",
        "bearer": "b-bearer-value",
        "cookie": "c-cookie-value",
        "card": "4111 1111 1111 1111",
        "pin": "p-1234-pin",
        "colour": "teal-is-secret-here",
    }
    client = app.test_client()
    client.post(
        f"/pay?slow=1&access_token={secrets['query']}",
        json={
            "order": {"items": [{"payment": {"apiKey": secrets["nested"]}}]},
            "note": f"card {secrets['card']}",
            "customer_pin": secrets["pin"],
            "favouriteColour": secrets["colour"],
        },
        headers={
            "X-Api-Key": secrets["header"],
            "Authorization": f"Bearer {secrets['bearer']}",
            "Cookie": f"session={secrets['cookie']}",
            "User-Agent": "test-agent/1.0",
        },
    )
    client.post("/pay?slow=1", data={"password": secrets["form"], "name": "ok"})
    flush(app)
    app.extensions["flamewatch"].close()

    captured = [load_outlier(str(db_path), o.id)["request"] for o in list_outliers(str(db_path))]
    assert len(captured) == 2
    form_request, json_request = captured
    assert json_request["json"]["order"]["items"][0]["payment"]["apiKey"] == "[redacted]"
    assert json_request["json"]["note"] == "card [redacted card]"
    assert json_request["headers"] == {"user-agent": "test-agent/1.0", "x-api-key": "[redacted]"}
    assert form_request["form"] == {"password": "[redacted]", "name": "ok"}
    store_bytes = _everything_stored(db_path, tmp_path)
    for name, secret in secrets.items():
        assert secret.encode() not in store_bytes, name
    # The card's digits in any grouping; a bare b"4111" matched a timestamp once.
    assert b"4111111111111111" not in store_bytes
    assert b"4111 1111" not in store_bytes
    assert b"1111 1111" not in store_bytes


def _everything_stored(db_path: Path | str, tmp_path: Path) -> bytes:
    """The store's files, or every row of every table of a PostgreSQL store as text."""
    if isinstance(db_path, Path):
        return b"".join(p.read_bytes() for p in tmp_path.glob(db_path.name + "*"))
    tables = [
        name
        for (name,) in rows(db_path, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    return "".join(
        str(tuple(row)) for table in tables for row in rows(db_path, f"SELECT * FROM {table}")
    ).encode()


def test_captures_stop_at_the_hourly_cap_but_outliers_are_still_flagged(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app, profiles_per_hour=2)
    warm(app, ["/pay"], SLOW_S)
    client = app.test_client()
    for _ in range(4):
        client.get("/pay?slow=1")
        flush(app)
    assert rows(db_path, "SELECT count(*) FROM requests WHERE is_outlier = 1")[0][0] == 4
    assert len(list_outliers(str(db_path))) == 2
    assert app.extensions["flamewatch"].recorder.capped == {"pay"}


def test_outliers_without_the_sampler_keep_facts_but_no_profile(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app, sampler=False)
    warm(app, ["/pay"], SLOW_S)
    app.test_client().get("/pay?slow=1&x=1")
    flush(app)
    assert not [t for t in threading.enumerate() if t.name == "flamewatch-sampler"]
    (outlier,) = list_outliers(str(db_path))
    stored = load_outlier(str(db_path), outlier.id)
    assert stored["request"]["query"] == {"slow": "1", "x": "1"}
    assert (stored["profile"], stored["note"]) == (None, "not sampled")
    result = CliRunner().invoke(main, ["profile", str(outlier.id), "-d", str(db_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: outlier {outlier.id} has no profile (not sampled)\n"
    # the writer reads CPU and memory while requests come in, sampler or not: the outlier's
    # load is measured from a reading taken before it started
    assert stored["resources"]["cpu_span_s"] >= SLOW_S


def test_streamed_outlier_is_captured_with_params_from_the_url(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = make_app(init=False, outlier_warmup=10)

    @app.get("/feed")
    def feed() -> Response:
        slow = request.args.get("slow")

        def chunks() -> Any:
            for _ in range(3):
                if slow:
                    wait_for_the_payment_gateway()
                yield "chunk\n"

        return Response(stream_with_context(chunks()))

    Flamewatch(app)
    client = app.test_client()
    for _ in range(10):
        with client.get("/feed") as response:
            assert response.text == "chunk\n" * 3
    flush(app)
    with client.get("/feed?slow=1&page=2") as response:
        assert response.text == "chunk\n" * 3
    flush(app)
    (outlier,) = list_outliers(str(db_path))
    stored = load_outlier(str(db_path), outlier.id)
    assert stored["request"]["query"] == {"slow": "1", "page": "2"}
    assert _share(load_session(str(db_path), outlier.id), "wait_for_the_payment_gateway") > 0.8


def test_async_outlier_is_captured(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = make_app(init=False, outlier_warmup=10)

    @app.get("/a")
    async def a() -> str:
        await asyncio.sleep(0.15 if request.args.get("slow") else 0)
        return "a"

    Flamewatch(app)
    warm(app, ["/a"], SLOW_S)
    app.test_client().get("/a?slow=1")
    flush(app)
    (outlier,) = list_outliers(str(db_path))
    # the view ran on asgiref's event-loop thread: the request thread's profile shows the wait
    assert load_session(str(db_path), outlier.id).duration >= 0.15


def test_sampler_sleeps_when_idle_and_stops_with_the_extension(app: Flask) -> None:
    app.test_client().get("/")
    agent = app.extensions["flamewatch"]
    sampler = agent.recorder.sampler
    assert sampler is not None
    assert sampler.alive
    time.sleep(1.5)  # a quiet second: the sampler goes to sleep on its event
    assert sampler.idle
    taken = sampler.samples_taken
    time.sleep(0.3)
    assert sampler.samples_taken == taken  # nothing in flight: nothing sampled
    assert agent.close()
    assert not sampler.alive
    assert not [t for t in threading.enumerate() if t.name.startswith("flamewatch-")]


def test_outliers_command_lists_and_filters(make_app: Callable[..., Flask], db_path: Path) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/pay", "/report"], SLOW_S)
    app.test_client().get("/pay?slow=1")
    app.test_client().get("/report?slow=1")
    flush(app)
    result = CliRunner().invoke(main, ["outliers", "-d", str(db_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["endpoint"] for d in data] == ["report", "pay"]  # newest first
    for item in data:
        assert {"id", "endpoint", "version", "group", "duration_ms", "started_at"} <= set(item)
        assert item["version"] == "v1"
        assert item["group"] == "127.0.0.1"
    only = CliRunner().invoke(main, ["outliers", "-d", str(db_path), "-e", "pay", "--json"])
    assert [d["endpoint"] for d in json.loads(only.output)] == ["pay"]
    none = CliRunner().invoke(main, ["outliers", "-d", str(db_path), "-v", "v9"])
    assert none.output == "no outliers captured\n"
    table = CliRunner().invoke(main, ["outliers", "-d", str(db_path)])
    assert "report" in table.output
    assert "samples" in table.output


def test_profile_command_errors_are_one_clear_line(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _outlier_app(make_app)
    warm(app, ["/pay"], SLOW_S)
    result = CliRunner().invoke(main, ["profile", "999", "-d", str(db_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: no outlier with id 999 in {db_path}\n"
    result = CliRunner().invoke(main, ["profile", "1", "-d", str(db_path), "-f", "svg"])
    assert result.exit_code == 2
    assert "'svg' is not one of 'pyisession', 'speedscope', 'html'" in result.output
    assert "Traceback" not in result.output
