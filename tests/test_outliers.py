"""The outlier flag end to end: warm-up, threshold, restart with seeded statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, request
from helpers import flush, stored

from flamewatch.flask_plugin import Flamewatch


def _app_with_sleepy_view(make_app: Callable[..., Flask], **config: object) -> Flask:
    app = make_app(init=False, **config)

    @app.get("/work")
    def work() -> str:
        time.sleep(float(request.args.get("ms", "1")) / 1000)
        return "done"

    Flamewatch(app)
    return app


def test_slow_request_after_warmup_is_flagged_with_its_threshold(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    # a 30 ms floor keeps a busy machine from making a 2 ms request an outlier
    app = _app_with_sleepy_view(make_app, outlier_warmup=20, outlier_min_ms=30)
    client = app.test_client()
    for _ in range(20):
        client.get("/work?ms=2")
    flush(app)  # the writer has now seen the warm-up and published a threshold
    client.get("/work?ms=2")
    client.get("/work?ms=150")
    flush(app)

    got = stored(db_path)
    assert [r["is_outlier"] for r in got] == [0] * 21 + [1]
    assert all(r["threshold_ms"] is None for r in got[:20])
    threshold = got[-1]["threshold_ms"]
    assert 30.0 <= threshold < 150  # at least the floor, below the slow request
    assert got[-1]["duration_ms"] > threshold


def test_statistics_are_seeded_from_the_store_after_a_restart(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    first = _app_with_sleepy_view(make_app, outlier_warmup=20)
    for _ in range(25):
        first.test_client().get("/work?ms=2")
    first.extensions["flamewatch"].close()

    again = _app_with_sleepy_view(make_app, outlier_warmup=20)
    client = again.test_client()
    client.get("/work?ms=2")  # the first request starts the writer, which seeds
    flush(again)
    client.get("/work?ms=80")
    flush(again)
    assert stored(db_path)[-1]["is_outlier"] == 1

    other_version = _app_with_sleepy_view(make_app, outlier_warmup=20, version="v2")
    client = other_version.test_client()
    client.get("/work?ms=2")
    flush(other_version)
    client.get("/work?ms=80")
    flush(other_version)
    last = stored(db_path)[-1]
    # a new version starts from the previous one's statistics: no blind warm-up after a deploy
    assert (last["version"], last["is_outlier"]) == ("v2", 1)
    assert last["threshold_ms"] is not None


def test_a_burst_of_slow_requests_does_not_raise_its_own_bar(
    make_app: Callable[..., Flask], db_path: Path
) -> None:
    app = _app_with_sleepy_view(make_app, outlier_warmup=20)
    client = app.test_client()
    for _ in range(40):
        client.get("/work?ms=2")
    flush(app)
    # far above the bar even if a loaded machine stretched the 2 ms requests: ten times it
    bar_ms = app.extensions["flamewatch"].recorder.thresholds_ns["work"] / 1e6
    slow_ms = max(150, round(10 * bar_ms))
    for _ in range(10):
        client.get(f"/work?ms={slow_ms}")
        flush(app)
    burst = stored(db_path)[-10:]
    assert [r["is_outlier"] for r in burst] == [1] * 10, [r["threshold_ms"] for r in burst]
