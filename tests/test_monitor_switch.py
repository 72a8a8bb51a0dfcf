"""The dashboard's monitor switch, written by the writer thread with the app's one store link.

On both backends the switch takes effect (in the store, and for the process's next requests)
and the request that switches opens no store connection of its own: on SQLite no
``sqlite3.connect`` happens during the POST (Python's audit events say so); on PostgreSQL the
flag's UPDATE comes from the server backend the writer inserts requests with (a trigger logs
``pg_backend_pid()``). Then :meth:`Writer.on_store` itself: what it returns and raises, a store
that cannot be opened, a caller that gives up waiting, a writer that is not running.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import Database, flush, is_pg, rows

from flamewatch.sampler import OutlierRule
from flamewatch.sampler.recorder import Recorder
from flamewatch.sampler.store import ProcessInfo, Store, StoreError, make_store
from flamewatch.sampler.writer import Writer

PREFIX = "/flamewatch"

#: the databases ``sqlite3.connect`` was called with while a test watches (see _sqlite_connects)
_connects: list[list[str]] = []


def _on_audit_event(event: str, args: tuple[Any, ...]) -> None:
    if event == "sqlite3.connect" and _connects:
        _connects[-1].append(str(args[0]))


sys.addaudithook(_on_audit_event)  # audit hooks stay for the process: it only counts while asked


@contextmanager
def _sqlite_connects() -> Iterator[list[str]]:
    """The SQLite connections this process opens (any thread) inside the block."""
    seen: list[str] = []
    _connects.append(seen)
    try:
        yield seen
    finally:
        _connects.remove(seen)


#: logs which server backend changes a monitor flag or inserts requests (PostgreSQL)
PG_WRITER_LOG = """
CREATE TABLE writer_log (pid integer NOT NULL, what text NOT NULL);
CREATE FUNCTION log_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO writer_log VALUES (pg_backend_pid(), TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER flag_written AFTER UPDATE OF monitored ON endpoints
    FOR EACH ROW WHEN (OLD.monitored IS DISTINCT FROM NEW.monitored) EXECUTE FUNCTION log_writer();
CREATE TRIGGER requests_written AFTER INSERT ON requests
    FOR EACH STATEMENT EXECUTE FUNCTION log_writer();
"""


def _log_pg_writers(url: str) -> None:
    import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

    with psycopg.connect(url) as conn:
        conn.execute(PG_WRITER_LOG)


def _token(client: FlaskClient) -> str:
    page = client.get(f"{PREFIX}/monitoring")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert match is not None
    return match[1]


def _switch(client: FlaskClient, token: str, endpoint: str, on: bool) -> int:
    data = {"csrf_token": token, "endpoint": endpoint, "monitored": "1" if on else "0"}
    return client.post(f"{PREFIX}/monitoring", data=data).status_code


def _monitored(database: Database, endpoint: str) -> bool:
    (row,) = rows(database, "SELECT monitored FROM endpoints WHERE name = ?", endpoint)
    return bool(row[0])


def _stored_items(database: Database) -> int:
    sql = "SELECT count(*) FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
    ((count,),) = rows(database, sql + " WHERE e.name = ?", "item")
    return int(count)


def test_the_switch_takes_effect_through_the_writers_own_connection(
    make_app: Callable[..., Flask], store_db: Database
) -> None:
    app = make_app(database=str(store_db))
    client = app.test_client()
    assert client.get("/items/1").status_code == 200
    flush(app)  # the store exists, with the app's routes and one request to "item"
    if is_pg(store_db):
        _log_pg_writers(str(store_db))
    with _sqlite_connects() as page_connects:
        token = _token(client)
    if not is_pg(store_db):
        assert page_connects  # the page reads with connections of its own: the hook sees them

    with _sqlite_connects() as switch_connects:
        assert _switch(client, token, "item", on=False) == 303
    assert switch_connects == []
    assert not _monitored(store_db, "item")
    assert not app.extensions["flamewatch"].recorder.is_monitored("item")  # at once
    client.get("/items/2")
    flush(app)
    assert _stored_items(store_db) == 1  # the request after the switch was not recorded

    with _sqlite_connects() as switch_connects:
        assert _switch(client, token, "item", on=True) == 303
    assert switch_connects == []
    assert _monitored(store_db, "item")
    client.get("/items/3")
    flush(app)
    assert _stored_items(store_db) == 2

    if is_pg(store_db):
        log = rows(store_db, "SELECT pid, what FROM writer_log")
        assert sorted({what for _, what in log}) == ["endpoints", "requests"]
        assert len({pid for pid, _ in log}) == 1, log  # one backend: the writer's connection


def test_an_unknown_endpoint_is_not_switched(
    make_app: Callable[..., Flask], store_db: Database
) -> None:
    app = make_app(database=str(store_db))
    client = app.test_client()
    client.get("/")
    flush(app)
    assert _switch(client, _token(client), "no_such_view", on=False) == 404
    assert rows(store_db, "SELECT name FROM endpoints WHERE name = 'no_such_view'") == []


def test_a_switch_after_close_changes_nothing(
    make_app: Callable[..., Flask], store_db: Database
) -> None:
    app = make_app(database=str(store_db))
    client = app.test_client()
    client.get("/items/1")
    flush(app)
    token = _token(client)
    app.extensions["flamewatch"].close()
    response = client.post(
        f"{PREFIX}/monitoring", data={"csrf_token": token, "endpoint": "item", "monitored": "0"}
    )
    assert response.status_code == 503
    assert "nothing changed" in response.text
    assert _monitored(store_db, "item")


# -- Writer.on_store -------------------------------------------------------------------------


def _writer(url: str) -> Writer:
    recorder = Recorder(1000, lambda endpoint: True)
    process = ProcessInfo("host", 1, "v1", "test", time.time(), "test")
    return Writer(make_store(url), recorder, OutlierRule(), process, flush_interval=0.05)


def _url(database: Database) -> str:
    return database if isinstance(database, str) else f"sqlite:///{database}"


def test_on_store_runs_on_the_writer_thread_with_its_store(store_db: Database) -> None:
    writer = _writer(_url(store_db))
    writer.start()
    try:

        def where(store: Store) -> tuple[str, bool]:
            return threading.current_thread().name, store is writer.store

        assert writer.on_store(where, timeout=30) == ("flamewatch-writer", True)

        def broken(store: Store) -> None:
            store.monitor_flags()
            raise ValueError("the action's own error")

        with pytest.raises(ValueError, match="the action's own error"):
            writer.on_store(broken, timeout=30)
        # the link was dropped as a precaution and is opened again for the next command
        assert writer.on_store(lambda store: store.monitor_flags(), timeout=30) == {}
        assert writer.flush(timeout=30)
    finally:
        assert writer.stop(10)
    with pytest.raises(StoreError, match="not running"):
        writer.on_store(lambda store: None, timeout=30)


def test_on_store_refuses_when_the_store_cannot_be_opened(
    store_db: Database, tmp_path: Any
) -> None:
    if is_pg(store_db):
        url = str(store_db).rsplit("/", 1)[0] + "/no_such_database"
    else:
        (tmp_path / "a-file").write_text("not a directory")
        url = f"sqlite:///{tmp_path / 'a-file' / 'store.sqlite3'}"
    writer = _writer(url)
    writer.start()
    ran: list[bool] = []
    try:
        with pytest.raises(StoreError, match="cannot be reached"):
            writer.on_store(lambda store: ran.append(True), timeout=30)
    finally:
        assert writer.stop(10)
    assert ran == []


def test_a_command_given_up_on_never_runs(store_db: Database) -> None:
    writer = _writer(_url(store_db))
    writer.start()
    release, busy = threading.Event(), threading.Event()

    def hold_the_writer(store: Store) -> None:
        busy.set()
        release.wait(30)

    holder = threading.Thread(target=writer.on_store, args=(hold_the_writer, 60))
    holder.start()
    ran: list[bool] = []
    try:
        assert busy.wait(30)
        with pytest.raises(StoreError, match=re.escape("did not reach the store within 0.1 s")):
            writer.on_store(lambda store: ran.append(True), timeout=0.1)
    finally:
        release.set()
        holder.join(30)
    assert writer.on_store(lambda store: "later ones run", timeout=30) == "later ones run"
    assert writer.stop(10)
    assert ran == []  # withdrawn before the writer took it
