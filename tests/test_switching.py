"""The switch interval is held low while an outlier is sampled, for the whole process, and put
back after: with one app, with two apps at once, when somebody else sets it, in a forked child.

Real Flask apps, real sampler threads, requests that really hold the GIL: each slow view runs
pure Python until the sampler has lowered the interval (a condition, not a clock), then reports
what it saw."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, request
from helpers import warm

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.outliers import list_outliers, load_session
from flamewatch.sampler.switching import SWITCH_INTERVAL

#: the default outlier sampling interval is 1 ms: the sampler lowers the interval to a quarter
LOWERED = 0.000_25
#: how long a test waits for a condition before it fails (never reached when things work)
PATIENCE_S = 20.0


def _until(condition: Callable[[], bool]) -> bool:
    """Spin in Python (holding the GIL between switches) until ``condition`` holds."""
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            return False
    return True


def _lowered() -> bool:
    return sys.getswitchinterval() <= LOWERED


@pytest.fixture
def normal() -> Iterator[float]:
    """The process's interval before the test; put back whatever the test did."""
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


@pytest.fixture
def make_spinning_app(tmp_path: Path) -> Iterator[Callable[[str], tuple[Flask, list[float]]]]:
    """An app whose ``/spin?slow=1`` holds the GIL until the sampler has lowered the interval,
    then runs ``app.config["AFTER_LOWERED"]`` and records the interval it sees."""
    apps: list[Flask] = []

    def make(name: str) -> tuple[Flask, list[float]]:
        app = Flask(name)
        app.config.update(
            TESTING=True,
            FLAMEWATCH_DATABASE=str(tmp_path / f"{name}.sqlite3"),
            FLAMEWATCH_VERSION="v1",
            FLAMEWATCH_OUTLIER_WARMUP=10,
        )
        seen: list[float] = []

        @app.get("/spin")
        def spin() -> str:
            if request.args.get("slow"):
                lowered = _until(_lowered)
                seen.append(sys.getswitchinterval() if lowered else -1.0)
                app.config.get("AFTER_LOWERED", lambda: None)()
            return "spun"

        Flamewatch(app)
        apps.append(app)
        warm(app, ["/spin"], 1.0)
        return app, seen

    yield make
    for app in apps:
        app.extensions["flamewatch"].close()


def _released() -> bool:
    return _until(lambda: SWITCH_INTERVAL.holders == 0)


def test_a_cpu_bound_outlier_is_sampled_with_the_interval_lowered_then_put_back(
    make_spinning_app: Callable[[str], tuple[Flask, list[float]]], normal: float
) -> None:
    app, seen = make_spinning_app("one")
    spun_after: list[float] = []

    def spin_on() -> None:  # 50 ms of pure Python once the interval is low
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
        spun_after.append(sys.getswitchinterval())

    app.config["AFTER_LOWERED"] = spin_on
    app.test_client().get("/spin?slow=1")
    assert seen == [LOWERED]
    assert spun_after == [LOWERED]  # held for as long as the outlier runs
    assert _released()
    assert sys.getswitchinterval() == normal
    app.extensions["flamewatch"].flush(30)
    (outlier,) = list_outliers(app.config["FLAMEWATCH_DATABASE"])
    session = load_session(app.config["FLAMEWATCH_DATABASE"], outlier.id)
    names = {frame.split("\x00", 1)[0] for stack, _ in session.frame_records for frame in stack}
    assert "spin_on" in names


def test_two_apps_share_the_hold_and_the_last_one_done_puts_it_back(
    make_spinning_app: Callable[[str], tuple[Flask, list[float]]], normal: float
) -> None:
    first, seen_first = make_spinning_app("first")
    second, seen_second = make_spinning_app("second")
    release = {"first": threading.Event(), "second": threading.Event()}
    for app in (first, second):
        event = release[app.name]
        app.config["AFTER_LOWERED"] = lambda event=event: _until(event.is_set)
    threads = {
        app.name: threading.Thread(target=app.test_client().get, args=("/spin?slow=1",))
        for app in (first, second)
    }
    for thread in threads.values():
        thread.start()
    try:
        assert _until(lambda: len(seen_first) == len(seen_second) == 1)
        assert _until(lambda: SWITCH_INTERVAL.holders == 2)
        release["first"].set()
        threads["first"].join()
        assert _until(lambda: SWITCH_INTERVAL.holders == 1)
        assert sys.getswitchinterval() == LOWERED  # the second app's outlier still runs
    finally:
        release["first"].set()
        release["second"].set()
        for thread in threads.values():
            thread.join()
    assert seen_first == seen_second == [LOWERED]
    assert _released()
    assert sys.getswitchinterval() == normal


def test_an_interval_somebody_else_sets_meanwhile_is_kept(
    make_spinning_app: Callable[[str], tuple[Flask, list[float]]], normal: float
) -> None:
    app, seen = make_spinning_app("theirs")
    app.config["AFTER_LOWERED"] = lambda: sys.setswitchinterval(0.002)
    client = app.test_client()
    client.get("/spin?slow=1")
    assert _released()
    assert sys.getswitchinterval() == 0.002  # theirs, not flamewatch's saved one
    # lowered again for the next outlier, and theirs is what goes back after it
    app.config["AFTER_LOWERED"] = lambda: None
    client.get("/spin?slow=1")
    assert seen == [LOWERED, LOWERED]
    assert _released()
    assert sys.getswitchinterval() == 0.002
    assert normal != 0.002


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_it_is_held_gets_the_normal_interval(
    make_spinning_app: Callable[[str], tuple[Flask, list[float]]], normal: float
) -> None:
    app, seen = make_spinning_app("forking")
    found: list[str] = []

    def fork() -> None:
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report and leave at once
            os.write(write_end, f"{sys.getswitchinterval()!r} {SWITCH_INTERVAL.holders}".encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            found.append(reader.read())
        os.waitpid(pid, 0)
        found.append(repr(sys.getswitchinterval()))  # the parent's, still held

    app.config["AFTER_LOWERED"] = fork
    app.test_client().get("/spin?slow=1")
    assert seen == [LOWERED]
    assert found == [f"{normal!r} 0", repr(LOWERED)]
    assert _released()
    assert sys.getswitchinterval() == normal
