"""Outliers are never missed: not in a burst, not after a deploy, not when CPU-bound.

The threshold is in force from the request right after an endpoint's warm-up, whatever the
writer's cadence; a new version starts from the previous version's statistics; a CPU-bound
outlier is sampled as densely as a sleeping one; an app with flamewatch is freed by reference
counting alone.
"""

from __future__ import annotations

import gc
import sys
import time
import weakref
from pathlib import Path

import pytest
from flask import Flask, request
from helpers import fetch_concurrently, rows

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.outliers import load_session
from flamewatch.sampler.store import ProcessInfo, make_store, resolve_database

#: the slow requests' time: 100x a quick one, and far above any threshold a loaded machine's
#: quick requests could raise (min_ms is 5 ms)
SLOW_S = 0.1


@pytest.fixture
def db_path(store_db: Path | str) -> Path | str:
    """The store of every test here: a SQLite file, then a PostgreSQL database."""
    return store_db


def wait_for_the_warehouse() -> None:
    time.sleep(SLOW_S)


def crunch_the_numbers(seconds: float) -> int:
    """Pure Python for ``seconds``: holds the GIL but for the interpreter's switches."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def _app(db_path: Path | str, version: str, tmp_path: Path, **config: object) -> Flask:
    app = Flask(f"burst-{version}", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True)

    @app.get("/stock")
    def stock() -> str:
        if request.args.get("slow"):
            wait_for_the_warehouse()
        elif request.args.get("ms"):
            time.sleep(float(request.args["ms"]) / 1000)
        return "ok"

    @app.get("/new")
    def new() -> str:
        return "new"

    @app.get("/calc")
    def calc() -> str:
        crunch_the_numbers(0.3 if request.args.get("slow") else 0.001)
        return "calc"

    # a flush interval no burst here outlasts: the writer never publishes a threshold in time
    config.setdefault("flush_interval", 30.0)
    Flamewatch(app, database=str(db_path), version=version, **config)
    return app


def _last(db_path: Path | str, version: str, count: int) -> list[tuple[int, bool, float | None]]:
    """(request id, flagged, threshold) of the last ``count`` requests of a version, oldest
    first: the slow ones, which every test here serves last."""
    found = rows(
        db_path,
        "SELECT r.id, r.is_outlier, r.threshold_ms, r.duration_ms FROM requests r"
        " JOIN versions v ON v.id = r.version_id WHERE v.name = ? ORDER BY r.id DESC LIMIT ?",
        version,
        count,
    )
    assert len(found) == count
    for _, _, _, duration in found:
        assert duration >= SLOW_S * 1000  # they are the slow ones
    return [(request_id, bool(flag), threshold) for request_id, flag, threshold, _ in found][::-1]


def _flagged_when_past(db_path: Path | str, last: list[tuple[int, bool, float | None]]) -> None:
    """Each request had a threshold in force, was flagged exactly when it ran past it, and,
    when flagged, kept a profile of the slow function.

    On a quiet machine every slow request here is far past its threshold and flagged; on a
    loaded one, the quick requests' statistics (and so the threshold) may rise to meet it,
    which is the outlier rule working, not a miss."""
    for request_id, flagged, threshold in last:
        assert threshold is not None, (request_id, "no threshold in force")
        ((duration_ms,),) = rows(
            db_path, "SELECT duration_ms FROM requests WHERE id = ?", request_id
        )
        assert flagged == (duration_ms > threshold), (request_id, duration_ms, threshold)
        if flagged:
            ((outlier_id,),) = rows(
                db_path, "SELECT id FROM outliers WHERE request_id = ?", request_id
            )
            session = load_session(str(db_path), outlier_id)
            names = {
                frame.split("\x00", 1)[0] for stack, _ in session.frame_records for frame in stack
            }
            assert "wait_for_the_warehouse" in names


def test_a_burst_flags_the_slow_requests_right_after_the_warmup(
    db_path: Path | str, tmp_path: Path
) -> None:
    for version in ("v1", "v2", "v3"):
        app = _app(db_path, version, tmp_path)
        client = app.test_client()
        started = time.monotonic()
        for _ in range(120):
            client.get("/stock")
        client.get("/stock?slow=1")
        client.get("/stock?slow=1")
        burst_s = time.monotonic() - started
        assert app.extensions["flamewatch"].close()
        assert burst_s < 30.0  # the writer cannot have drained during the burst
        _flagged_when_past(db_path, _last(db_path, version, 2))


def test_a_burst_behind_a_real_threaded_server_is_flagged(
    db_path: Path | str, tmp_path: Path
) -> None:
    app = _app(db_path, "v1", tmp_path, outlier_warmup=20)
    fetch_concurrently(app, ["/stock"] * 20 + ["/stock?slow=1"] * 2, clients=1)
    assert app.extensions["flamewatch"].close()
    _flagged_when_past(db_path, _last(db_path, "v1", 2))
    # the 20 warm-up requests had no threshold; every later one had one
    thresholds = [t for (t,) in rows(db_path, "SELECT threshold_ms FROM requests ORDER BY id")]
    assert thresholds[:20] == [None] * 20
    assert None not in thresholds[20:]


def test_a_deploy_measures_its_first_requests_against_the_previous_version(
    db_path: Path | str, tmp_path: Path
) -> None:
    """v2's first 10 requests are 20x v1's normal: measured against v1's statistics from the
    first one, so flagged and profiled (every one, unless a loaded machine raised v1's)."""
    v1 = _app(db_path, "v1", tmp_path)

    @v1.get("/slowly")
    def slowly() -> str:
        time.sleep(SLOW_S / 20)
        return "ok"

    client = v1.test_client()
    for _ in range(60):
        client.get("/slowly")
    assert v1.extensions["flamewatch"].close()

    v2 = _app(db_path, "v2", tmp_path, outlier_warmup=10)

    @v2.get("/slowly", endpoint="slowly")
    def slowly_v2() -> str:
        wait_for_the_warehouse()  # 20x v1's
        return "ok"

    client = v2.test_client()
    for _ in range(10):
        client.get("/slowly")
    for _ in range(3):
        client.get("/new")  # an endpoint v1 never had: it warms up
    assert v2.extensions["flamewatch"].close()

    # v2's first ten requests had v1's statistics as their threshold, from the first one
    first = rows(
        db_path,
        "SELECT r.id, r.is_outlier, r.threshold_ms FROM requests r"
        " JOIN endpoints e ON e.id = r.endpoint_id JOIN versions v ON v.id = r.version_id"
        " WHERE v.name = 'v2' AND e.name = 'slowly' ORDER BY r.id",
    )
    assert len(first) == 10
    _flagged_when_past(db_path, [(i, bool(flag), threshold) for i, flag, threshold in first])
    new = rows(
        db_path,
        "SELECT r.threshold_ms FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
        " WHERE e.name = 'new'",
    )
    assert [t for (t,) in new] == [None] * 3


def test_the_prior_gives_way_to_the_new_versions_own_requests(
    db_path: Path | str, tmp_path: Path
) -> None:
    """A version that is slower for good is flagged at first, then becomes its own normal."""
    v1 = _app(db_path, "v1", tmp_path)
    client = v1.test_client()
    for _ in range(40):
        client.get("/stock")
    assert v1.extensions["flamewatch"].close()

    v2 = _app(db_path, "v2", tmp_path, flush_interval=0.2, outlier_window=200)

    @v2.get("/stock2")
    def stock2() -> str:
        return "ok"

    client = v2.test_client()
    for _ in range(150):
        client.get("/stock?ms=20")  # 50x v1's normal, for good
    agent = v2.extensions["flamewatch"]
    assert agent.flush(30)
    for _ in range(5):
        client.get("/stock?ms=20")
    assert agent.close()
    found = rows(
        db_path,
        "SELECT r.is_outlier, r.threshold_ms, r.duration_ms FROM requests r"
        " JOIN versions v ON v.id = r.version_id WHERE v.name = 'v2' ORDER BY r.id",
    )
    assert len(found) == 155
    flags = [bool(flag) for flag, _, _ in found]
    # far slower than v1 (flagged from the first request on a quiet machine): measured
    # against v1's statistics from the first request on
    _, first_threshold, first_ms = found[0]
    assert first_threshold is not None
    assert flags[0] == (first_ms > first_threshold)
    # 150 requests later the bar is over v2's 20 ms normal (v1's was ~5 ms); a loaded
    # machine may still stall one of the last five past it, and that one is flagged
    last = [tuple(row) for row in found[-5:]]
    assert all(threshold > 20 for _, threshold, _ in last), last
    assert [bool(flag) for flag, _, _ in last] == [ms > bar for _, bar, ms in last]


def test_a_cpu_bound_outlier_behind_a_real_server_is_profiled_end_to_end(
    db_path: Path | str, tmp_path: Path
) -> None:
    """300 ms of pure Python past a ~5 ms threshold, behind a real threaded server: the
    sampler gets the GIL at the interpreter's switches only, which it makes every 0.25 ms
    while the outlier runs (see flamewatch.sampler.switching) and puts back to what it was
    after; the profile covers the request and names the function."""
    app = _app(db_path, "v1", tmp_path, outlier_warmup=20)
    before = sys.getswitchinterval()
    fetch_concurrently(app, ["/calc"] * 20 + ["/calc?slow=1"] * 5, clients=1)
    assert app.extensions["flamewatch"].close()
    assert sys.getswitchinterval() == before  # put back
    last = _last(db_path, "v1", 5)  # the slow ones, served last
    assert all(threshold is not None for _, _, threshold in last)
    flagged = [request_id for request_id, flag, _ in last if flag]
    assert flagged  # all five on a quiet machine; on a loaded one, those past the threshold
    counts = []
    for request_id in flagged:
        ((outlier_id, duration_ms),) = rows(
            db_path,
            "SELECT o.id, r.duration_ms FROM outliers o JOIN requests r ON r.id = o.request_id"
            " WHERE r.id = ?",
            request_id,
        )
        session = load_session(str(db_path), outlier_id)
        counts.append(session.sample_count)
        total = sum(seconds for _, seconds in session.frame_records)
        inside = sum(
            seconds
            for stack, seconds in session.frame_records
            if any(frame.startswith("crunch_the_numbers\x00") for frame in stack)
        )
        # the time before the threshold was crossed is [unsampled]: on a loaded machine the
        # threshold is higher, so the culprit's share is judged on the sampled time
        sampled = total - sum(
            seconds
            for stack, seconds in session.frame_records
            if stack[-1].startswith("[unsampled]\x00")
        )
        assert inside / sampled >= 0.8
        assert total == pytest.approx(duration_ms / 1000, rel=0.05)  # the whole request
    # a lower bound with a wide margin for a loaded machine (~55 at the 5 ms switch interval)
    assert sorted(counts)[len(counts) // 2] >= 10, counts


def test_an_app_with_flamewatch_is_freed_on_zero_refcount(tmp_path: Path) -> None:
    gc.collect()
    gc.disable()
    try:
        app = Flask("freed")
        Flamewatch(app, database=str(tmp_path / "store.sqlite3"))

        @app.get("/")
        def index() -> str:
            return "ok"

        assert app.test_client().get("/").text == "ok"
        agent = app.extensions["flamewatch"]
        assert agent.close()
        weak = weakref.ref(app)
        del app, index
        assert weak() is None
        del agent
    finally:
        gc.enable()


def test_version_order_follows_the_first_request_not_the_writers(db_path: Path | str) -> None:
    """A version's place is its first process's start (taken on the thread that served its
    first request), not the moment a writer registered it: on a loaded machine a later
    version's writer can register first, and the order of the versions must not change."""
    store = make_store(resolve_database(str(db_path), "."))
    store.open()
    try:
        for name, started_at in (("b", 300.0), ("a", 100.0), ("c", 200.0), ("a", 400.0)):
            process = ProcessInfo("host", 1, name, "test", started_at, "flamewatch")
            store.register_process(process)
    finally:
        store.close()
    found = rows(db_path, "SELECT name, first_seen FROM versions ORDER BY first_seen")
    assert [(name, first) for name, first in found] == [("a", 100.0), ("c", 200.0), ("b", 300.0)]
