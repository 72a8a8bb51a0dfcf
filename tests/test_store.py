"""The store, on both backends (SQLite file, PostgreSQL database): schema, several writers,
failures that never reach the app."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers import Database, flush, is_pg, rows, stored
from pgserver import PostgresServer

from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    make_store,
    resolve_database,
)
from flamewatch.sampler.store.connection import StoreConnection
from flamewatch.sampler.store.postgres import translate
from flamewatch.sampler.store.schema import MIGRATIONS


def open_store(database: Database) -> Store:
    store = make_store(resolve_database(str(database), "."))
    store.open()
    return store


@contextmanager
def raw(database: Database) -> Iterator[Any]:
    """A plain driver connection in autocommit mode (qmark SQL for both)."""
    if is_pg(database):
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        with psycopg.connect(str(database), autocommit=True) as pg:
            yield StoreConnection(pg, "")
        return
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def test_new_store_has_the_schema_version(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    app = make_app(database=str(store_db))
    app.test_client().get("/")
    flush(app)
    assert rows(store_db, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == str(
        SCHEMA_VERSION
    )
    if not is_pg(store_db):
        assert rows(store_db, "PRAGMA journal_mode")[0][0] == "wal"


def test_opening_twice_migrates_once(store_db: Database) -> None:
    for _ in range(2):
        open_store(store_db).close()
    assert len(rows(store_db, "SELECT * FROM meta")) == 1


def test_a_version_1_store_is_migrated_keeping_its_rows(store_db: Database) -> None:
    with raw(store_db) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(translate(statement) if is_pg(store_db) else statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO versions VALUES (1, 'old', 'config', 1.0, 2.0)")
    open_store(store_db).close()
    assert rows(store_db, "SELECT value FROM meta")[0][0] == str(SCHEMA_VERSION)
    assert rows(store_db, "SELECT name FROM versions")[0][0] == "old"
    assert rows(store_db, "SELECT count(*) FROM outliers")[0][0] == 0


def test_a_store_from_a_newer_flamewatch_is_refused(store_db: Database) -> None:
    open_store(store_db).close()
    with raw(store_db) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version is 999, newer than this flamewatch"):
        open_store(store_db)


@pytest.fixture(params=["sqlite", "postgresql"])
def unavailable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], Database]]]:
    """A store setting that cannot be opened yet, and how to make it available: a SQLite
    file that is not a database (a folder that is a file, or a device, is refused at
    init_app); a PostgreSQL database that does not exist yet."""
    if request.param == "sqlite":
        blocker = tmp_path / "store.sqlite3"
        blocker.write_bytes(b"not a SQLite database, " * 100)

        def unblock_sqlite() -> Database:
            blocker.unlink()
            return blocker

        yield str(blocker), unblock_sqlite
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"later_{tmp_path.name[-20:].replace('-', '_').lower()}"
    made: list[str] = []

    def unblock_pg() -> Database:
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(server.url_of(name))
        return made[0]

    yield server.url_of(name), unblock_pg
    for url in made:
        server.drop(url)


def test_unwritable_store_keeps_the_app_serving_and_logs_once(
    unavailable: tuple[str, Callable[[], Database]],
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    database, make_available = unavailable
    app = make_app(database=database)
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

    # the store appears: the records that waited are written, nothing lost
    store = make_available()
    assert agent.flush(timeout=30)
    assert len(stored(store)) == 50
    assert "writable again" in caplog.text


def test_records_beyond_the_queue_cap_are_dropped_and_counted(
    unavailable: tuple[str, Callable[[], Database]], make_app: Callable[..., Flask]
) -> None:
    database, make_available = unavailable
    app = make_app(database=database, queue_size=100)
    client = app.test_client()
    agent = app.extensions["flamewatch"]
    for _ in range(250):
        assert client.get("/").status_code == 200
    assert agent.recorder.dropped >= 150 - 100  # queue and writer hold at most 2 x 100
    store = make_available()
    assert agent.flush(timeout=30)
    written = len(stored(store))
    (dropped,) = rows(store, "SELECT dropped FROM processes")[0]
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


def test_two_processes_write_the_same_store_and_exit_flushes(store_db: Database) -> None:
    db_path = store_db
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(db_path), "3000"]) for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    got = rows(db_path, "SELECT process_id, count(*) FROM requests GROUP BY process_id")
    assert sorted(count for _, count in got) == [3000, 3000]
    processes = rows(db_path, "SELECT pid, dropped FROM processes ORDER BY pid")
    assert sorted(pid for pid, _ in processes) == sorted(p.pid for p in procs)
    assert [dropped for _, dropped in processes] == [0, 0]


def test_report_can_read_while_the_writer_writes(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    app = make_app(database=str(store_db))
    client = app.test_client()
    client.get("/")
    flush(app)
    with open_readonly(str(store_db)) as reader:
        if not reader.is_postgres:
            reader.execute("BEGIN")  # PostgreSQL's read-only connection holds a snapshot
        assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
        for _ in range(10):
            client.get("/")
        flush(app)  # not blocked by the open read transaction (WAL / MVCC)
        assert reader.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    assert len(stored(store_db)) == 11


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_worker_starts_its_own_writer_and_loses_nothing(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    db_path = store_db
    app = make_app(database=str(store_db))
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
