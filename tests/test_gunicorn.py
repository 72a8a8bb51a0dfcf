"""Many workers, one store: a real gunicorn with 4 workers (sync and gthread) under concurrent
load, writing one SQLite file or one PostgreSQL database; and workers ended by SIGTERM and
SIGKILL in the middle of the load.

Each request carries a unique id, which the app reports as its user/group, so the store can
be checked request by request: counted exactly once, by the worker that answered it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.request import urlopen

import psutil
import pytest
from helpers import Database, rows
from histogram_check import assert_histograms_match_rows

from flamewatch.reports.site import write_site

WORKERS = 4
SLOW_S = 0.12
WRITE_ALLOWANCE_S = 1.0  # a batch's write, when other processes hold both cores
ORDER_SLACK_S = 0.1  # client threads see answers slightly out of the order they were queued

APP = textwrap.dedent(
    """
    import os, time
    from flask import Flask, request
    from flamewatch.flask_plugin import Flamewatch

    app = Flask("gunicorn_app")

    @app.get("/work/<rid>")
    def work(rid):
        time.sleep(float(request.args.get("s", "0.001")))
        return f"{rid} {os.getpid()}"

    @app.get("/health")
    def health():
        return "ok"

    Flamewatch(
        app,
        database=os.environ["FW_DATABASE"],
        version="g1",
        flush_interval=float(os.environ["FW_FLUSH"]),
        outlier_warmup=5,
        exclude=["health"],
        group_by=lambda request: request.view_args["rid"],
    )
    """
)


@dataclass(frozen=True)
class Answer:
    rid: str
    status: int  # 0: no answer (connection refused or reset)
    pid: int
    at: float  # when the answer arrived (Unix time)


class Gunicorn:
    """``gunicorn -w 4`` serving the app above on a free loopback port."""

    def __init__(self, tmp: Path, database: Database, worker_class: str, flush: float) -> None:
        (tmp / "gunicorn_app.py").write_text(APP)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tmp / "gunicorn.log"
        command = [
            str(Path(sys.executable).with_name("gunicorn")),
            "--workers",
            str(WORKERS),
            "--worker-class",
            worker_class,
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--chdir",
            str(tmp),
            "--graceful-timeout",
            "30",
            "gunicorn_app:app",
        ]
        env = {**os.environ, "FW_DATABASE": str(database), "FW_FLUSH": str(flush)}
        with self.log.open("wb") as log:
            self.master = subprocess.Popen(command, env=env, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urlopen(f"{self.base}/health", timeout=5) as response:
                    if response.read() == b"ok" and len(self.workers()) == WORKERS:
                        return
            except OSError:  # not listening yet, or too slow to answer on a loaded machine
                pass
            assert self.master.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not start:\n{self.log.read_text()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.master.pid).children()]

    def get(self, rid: str, seconds: float = 0.001) -> Answer:
        try:
            with urlopen(f"{self.base}/work/{rid}?s={seconds}", timeout=60) as response:
                body = response.read().decode()
                status = response.status
        except (OSError, HTTPException):  # refused, reset or cut short by a kill: no answer
            return Answer(rid, 0, 0, time.time())
        echoed, pid = body.split()
        assert echoed == rid
        return Answer(rid, status, int(pid), time.time())

    def stop(self) -> str:
        """SIGTERM to the master: workers finish and exit (flamewatch flushes at exit)."""
        if self.master.poll() is None:
            self.master.send_signal(signal.SIGTERM)
        self.master.wait(timeout=60)
        return self.log.read_text()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """Start a server (ready to answer); every one is stopped after the test, whatever
    happens."""
    started: list[Gunicorn] = []

    def start(database: Database, worker_class: str, flush: float) -> Gunicorn:
        server = Gunicorn(tmp_path, database, worker_class, flush)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        if server.master.poll() is None:
            server.master.kill()
        server.master.wait()


def by_group(database: Database) -> dict[str, tuple[int, int, int]]:
    """rid -> (times stored, pid of the process that stored it, is_outlier)."""
    found: dict[str, tuple[int, int, int]] = {}
    for rid, count, pid, outlier in rows(
        database,
        "SELECT g.name, count(*), max(p.pid), max(r.is_outlier) FROM requests r"
        " JOIN user_groups g ON g.id = r.group_id JOIN processes p ON p.id = r.process_id"
        " GROUP BY g.name",
    ):
        found[rid] = (count, pid, outlier)
    return found


def check_clean_log(log: str) -> None:
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert "flamewatch:" not in log, log  # nothing failed, nothing was dropped


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_four_workers_count_every_request_once_and_capture_outliers_in_each(
    store_db: Database, worker_class: str, tmp_path: Path, serve: Callable[..., Gunicorn]
) -> None:
    server = serve(store_db, worker_class, flush=0.2)
    workers = set(server.workers())
    total, warm = 1200, 300
    plan = [(f"r{i}", SLOW_S if i >= warm and i % 10 == 0 else 0.001) for i in range(total)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda item: server.get(*item), plan))
    check_clean_log(server.stop())

    assert all(a.status == 200 for a in answers)
    assert {a.pid for a in answers} == workers  # every worker served
    stored = by_group(store_db)
    assert stored.keys() == {rid for rid, _ in plan}
    assert {rid: (count, pid) for rid, (count, pid, _) in stored.items()} == {
        a.rid: (1, a.pid) for a in answers
    }  # each request exactly once, by the worker that answered it
    slow = {rid for rid, seconds in plan if seconds == SLOW_S}
    flagged = {rid for rid, (_, _, outlier) in stored.items() if outlier}
    assert len(flagged & slow) >= 0.9 * len(slow)
    captured = rows(
        store_db,
        "SELECT p.pid, count(*) FROM outliers o JOIN requests r ON r.id = o.request_id"
        " JOIN processes p ON p.id = r.process_id GROUP BY p.pid",
    )
    assert {pid for pid, _ in captured} == workers  # outliers captured from every worker

    site = write_site(str(store_db), tmp_path / "site").parent
    utilization = (site / "utilization.html").read_text()
    for pid in workers:
        assert f'<td class="num">{pid}</td>' in utilization
    assert f'<td class="num">{WORKERS}</td>\n  <td class="num">{total}</td>' in utilization


def _load_until(server: Gunicorn, stop: threading.Event, answers: list[Answer]) -> None:
    """Six clients sending requests with fresh ids until ``stop``; answers appended."""
    lock = threading.Lock()
    counter = iter(range(10**9))

    def client() -> None:
        while not stop.is_set():
            with lock:
                rid = f"q{next(counter)}"
            answer = server.get(rid)
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_worker_ended_by_a_signal_loses_at_most_its_last_flush_interval(
    store_db: Database, signum: signal.Signals, serve: Callable[..., Gunicorn]
) -> None:
    flush_interval = 0.5
    server = serve(store_db, "sync", flush=flush_interval)
    stop = threading.Event()
    answers: list[Answer] = []
    loader = threading.Thread(target=_load_until, args=(server, stop, answers))
    loader.start()
    # kill the busiest worker once it has answered enough requests before the window that
    # may be lost (workers start slowly on a loaded machine: wait for that, not a fixed time)
    deadline = time.monotonic() + 120
    while True:
        time.sleep(0.2)
        early = time.time() - flush_interval - WRITE_ALLOWANCE_S - 0.2
        served = Counter(a.pid for a in list(answers) if a.status == 200 and a.at <= early)
        if (served and served.most_common(1)[0][1] > 20) or time.monotonic() > deadline:
            break
    victim = served.most_common(1)[0][0]  # the busiest worker so far
    os.kill(victim, signum)
    killed_at = time.time()
    time.sleep(1.5)  # the master replaces the worker; the load goes on
    stop.set()
    loader.join()
    log = server.stop()

    stored = by_group(store_db)
    answered = [a for a in answers if a.status == 200]
    assert all(stored.get(a.rid, (0,))[0] <= 1 for a in answered)  # never twice
    others = [a for a in answered if a.pid != victim]
    assert all(stored[a.rid][:2] == (1, a.pid) for a in others)  # other workers lose nothing
    by_victim = [a for a in answered if a.pid == victim]
    # the last flush interval, plus the time a write takes on a loaded 2-core machine
    window_start = killed_at - flush_interval - WRITE_ALLOWANCE_S
    assert len([a for a in by_victim if a.at <= window_start]) > 20  # not a vacuous check
    lost = [a for a in by_victim if a.rid not in stored]
    if signum == signal.SIGTERM:
        assert all(a.status == 200 for a in answers)  # a graceful exit answers what it took
        assert lost == []
        check_clean_log(log)
    else:
        # written every flush interval: only what was answered in the last one dies with it
        assert all(a.at > window_start for a in lost), (killed_at, sorted(a.at for a in lost))
        if lost:  # and what is lost is the tail: nothing answered after it was written
            first_lost = min(a.at for a in lost)
            kept = [a.at for a in by_victim if a.rid in stored]
            assert max(kept) < first_lost + ORDER_SLACK_S
    # each request is its own group: most are counted as "others", every count still adds up
    assert_histograms_match_rows(store_db, capped=True)
