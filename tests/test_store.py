"""The SQLite store: schema, several writers, failures that never reach the app."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from helpers import flush, rows, stored

from flamewatch.sampler.store import SCHEMA_VERSION, SQLiteStore, StoreError


def test_new_store_has_the_schema_version_and_wal_mode(app: Flask, db_path: Path) -> None:
    app.test_client().get("/")
    flush(app)
    assert rows(db_path, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == str(
        SCHEMA_VERSION
    )
    assert rows(db_path, "PRAGMA journal_mode")[0][0] == "wal"


def test_opening_twice_migrates_once(db_path: Path) -> None:
    for _ in range(2):
        store = SQLiteStore(db_path)
        store.open()
        store.close()
    assert len(rows(db_path, "SELECT * FROM meta")) == 1


def test_a_version_1_store_is_migrated_keeping_its_rows(db_path: Path) -> None:
    from flamewatch.sampler.store.schema import MIGRATIONS

    conn = sqlite3.connect(db_path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO versions VALUES (1, 'old', 'config', 1.0, 2.0)")
    conn.commit()
    conn.close()
    store = SQLiteStore(db_path)
    store.open()
    store.close()
    assert rows(db_path, "SELECT value FROM meta")[0][0] == str(SCHEMA_VERSION)
    assert rows(db_path, "SELECT name FROM versions")[0][0] == "old"
    assert rows(db_path, "SELECT count(*) FROM outliers")[0][0] == 0


def test_a_store_from_a_newer_flamewatch_is_refused(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    store.open()
    store.conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(StoreError, match="schema version is 999, newer than this flamewatch"):
        SQLiteStore(db_path).open()


def test_unwritable_store_keeps_the_app_serving_and_logs_once(
    make_app: Callable[..., Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's folder should be")
    app = make_app(database=str(blocker / "store.sqlite3"))
    client = app.test_client()
    agent = app.extensions["flamewatch"]
    with caplog.at_level(logging.DEBUG, logger="flamewatch"):
        for _ in range(50):
            assert client.get("/").text == "hello"
            agent.flush(timeout=5)  # each flush retries the store at once
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "cannot open the store" in errors[0].getMessage()
    assert not agent.flush(timeout=5)

    # the folder appears: the records that waited are written, nothing lost
    blocker.unlink()
    blocker.mkdir()
    assert agent.flush(timeout=30)
    assert len(stored(blocker / "store.sqlite3")) == 50
    assert "writable again" in caplog.text


def test_records_beyond_the_queue_cap_are_dropped_and_counted(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    app = make_app(database=str(blocker / "store.sqlite3"), queue_size=100)
    client = app.test_client()
    agent = app.extensions["flamewatch"]
    for _ in range(250):
        assert client.get("/").status_code == 200
    assert agent.recorder.dropped >= 150 - 100  # queue and writer hold at most 2 x 100
    blocker.unlink()
    blocker.mkdir()
    assert agent.flush(timeout=30)
    written = len(stored(blocker / "store.sqlite3"))
    (dropped,) = rows(blocker / "store.sqlite3", "SELECT dropped FROM processes")[0]
    assert written + dropped == 250  # every request is either stored or counted
    assert dropped == agent.recorder.dropped > 0


_WORKER = textwrap.dedent(
    """
    import sys
    from flask import Flask
    from flamewatch.flask_plugin import Flamewatch

    app = Flask("worker")
    app.config.update(FLAMEWATCH_DATABASE=sys.argv[1], FLAMEWATCH_VERSION="mp",
                      FLAMEWATCH_FLUSH_INTERVAL=0.05)

    @app.get("/n/<int:n>")
    def n(n):
        return str(n)

    Flamewatch(app)
    client = app.test_client()
    for i in range(int(sys.argv[2])):
        assert client.get(f"/n/{i}").status_code == 200
    # no flush, no close: the exit handler writes what is left
    """
)


def test_two_processes_write_the_same_store_and_exit_flushes(db_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(db_path), "3000"]) for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = rows(db_path, "SELECT process_id, count(*) FROM requests GROUP BY process_id")
    assert sorted(count for _, count in got) == [3000, 3000]
    processes = rows(db_path, "SELECT pid, dropped FROM processes ORDER BY pid")
    assert sorted(pid for pid, _ in processes) == sorted(p.pid for p in procs)
    assert [dropped for _, dropped in processes] == [0, 0]


def test_report_can_read_while_the_writer_writes(app: Flask, db_path: Path) -> None:
    client = app.test_client()
    client.get("/")
    flush(app)
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
        for _ in range(10):
            client.get("/")
        flush(app)  # not blocked by the open read transaction (WAL)
        assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    finally:
        reader.close()
    assert len(stored(db_path)) == 11


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_worker_starts_its_own_writer_and_loses_nothing(app: Flask, db_path: Path) -> None:
    import os

    client = app.test_client()
    client.get("/")
    flush(app)  # the parent's writer thread is running when it forks
    pid = os.fork()
    if pid == 0:  # the child: serve, close, and report through the exit status
        code = 1
        try:
            for i in range(10):
                client.get(f"/items/{i}")
            code = 0 if app.extensions["flamewatch"].close(timeout=30) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.get("/")
    flush(app)
    by_process = rows(
        db_path,
        "SELECT p.pid, count(r.id) FROM processes p JOIN requests r ON r.process_id = p.id"
        " GROUP BY p.pid",
    )
    assert dict(by_process) == {os.getpid(): 2, pid: 10}  # type: ignore[arg-type]
