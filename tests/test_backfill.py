"""Upgrading a store made before the latency histograms: the backfill builds, from the stored
rows, exactly what the writer would have built; it resumes after an interruption and never
counts a row twice, and rows written by the new writer meanwhile are counted once.

The store of the previous schema (version 3) is vendored (``tests/data/store-v3``, made by
the previous release's real writer; its README says how). PostgreSQL gets the same rows in a
schema created by the first three migrations only.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from helpers import Database, flush, rows
from histogram_check import assert_histograms_match_rows, stored_tables

from flamewatch.reports.cli import main
from flamewatch.reports.transfer import build_histograms, migrate_store
from flamewatch.sampler.storable import Limits
from flamewatch.sampler.store import ProcessInfo, RequestRecord, make_store, resolve_database
from flamewatch.sampler.store.backfill import (
    BACKFILL_TO,
    BACKFILLED,
    backfill_histograms,
    backfill_state,
    histograms_pending,
    rebuild_histograms,
)
from flamewatch.sampler.store.connection import StoreConnection, open_connection
from flamewatch.sampler.store.postgres import translate
from flamewatch.sampler.store.retention import prune
from flamewatch.sampler.store.schema import MIGRATIONS

V3_STORE = Path(__file__).parent / "data" / "store-v3" / "store.sqlite3"
V3_ROWS = 2000
V3_TABLES = ("versions", "endpoints", "rules", "user_groups", "processes", "requests", "outliers")


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def v3_sqlite(tmp_path: Path) -> Path:
    """A copy of the vendored schema-3 store."""
    copy = tmp_path / "v3.sqlite3"
    shutil.copyfile(V3_STORE, copy)
    return copy


def _v3_postgres(url: str) -> None:
    """The vendored store's rows in a PostgreSQL schema of version 3, ids kept."""
    import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

    source = sqlite3.connect(V3_STORE)
    with psycopg.connect(url, autocommit=True) as conn:
        for statements in MIGRATIONS[:3]:
            for statement in statements:
                conn.execute(translate(statement))
        conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
        with conn.transaction():
            for table in V3_TABLES:
                cursor = source.execute(f"SELECT * FROM {table} ORDER BY id")
                names = ", ".join(d[0] for d in cursor.description)
                with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in cursor:
                        copy.write_row(row)
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                )
    source.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def v3_store(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The vendored schema-3 store, as a SQLite copy or in PostgreSQL."""
    if request.param == "sqlite":
        copy = tmp_path / "v3.sqlite3"
        shutil.copyfile(V3_STORE, copy)
        return copy
    url: str = request.getfixturevalue("pg_url")
    _v3_postgres(url)
    return url


def _connect(database: Database) -> StoreConnection:
    return open_connection(str(database), readonly=False)


def test_the_vendored_store_is_of_the_previous_schema() -> None:
    assert rows(V3_STORE, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "3"
    tables = {name for (name,) in rows(V3_STORE, "SELECT name FROM sqlite_master")}
    assert "latency" not in tables
    assert "traffic" not in tables
    assert rows(V3_STORE, "SELECT count(*) FROM requests")[0][0] == V3_ROWS


def test_migrate_builds_the_histograms_the_rows_make(v3_store: Database) -> None:
    conn = open_connection(str(v3_store))
    assert histograms_pending(conn)  # an old schema: histograms are missing
    conn.close()
    result = invoke("migrate", "-d", str(v3_store), "--quiet")
    assert result.output == (
        f"schema version 3 -> 5: migrated\nlatency histograms built from {V3_ROWS} stored"
        " requests\n"
    )
    found = assert_histograms_match_rows(v3_store)
    assert sum(found.latency.values()) == V3_ROWS
    assert {g for (_, _, g, _) in found.latency} == {0, 1, 2, 3, 4}  # 3 users, an address, none
    assert sum(hits for hits, _, _ in found.traffic.values()) == V3_ROWS
    assert sum(outliers for _, outliers, _ in found.traffic.values()) == 50
    assert {status for (_, _, status, _) in found.total} == {200, 404, 500}
    conn = open_connection(str(v3_store))
    assert not histograms_pending(conn)
    assert backfill_state(conn).done == backfill_state(conn).end == V3_ROWS
    conn.close()
    again = invoke("migrate", "-d", str(v3_store))
    assert again.output == "schema version 5: already current\n"  # nothing folded twice
    assert stored_tables(v3_store) == found


def _by_names(database: Database) -> dict[str, Counter[tuple[Any, ...]]]:
    """The histogram tables with names instead of ids (two stores' ids differ)."""
    endpoints = dict(rows(database, "SELECT id, name FROM endpoints"))
    versions = dict(rows(database, "SELECT id, name FROM versions"))
    groups = {**dict(rows(database, "SELECT id, name FROM user_groups")), 0: None, -1: "others"}
    processes = {
        pid: (host, os_pid)
        for pid, host, os_pid in rows(database, "SELECT id, hostname, pid FROM processes")
    }
    tables = stored_tables(database)
    latency, hourly, total, traffic = Counter(), Counter(), Counter(), Counter()
    for (e, v, g, b), n in tables.latency.items():
        latency[(endpoints[e], versions[v], groups[g], b)] += n
    for (e, v, h, b), n in tables.hourly.items():
        hourly[(endpoints[e], versions[v], h, b)] += n
    for (e, m, s, b), (n, _) in tables.total.items():
        total[(endpoints[e], m, s, b)] += int(n)
    for (e, v, p, h, m, s), (n, o, _) in tables.traffic.items():
        traffic[(endpoints[e], versions[v], processes[p], h, m, s, int(o))] += int(n)
    return {"latency": latency, "hourly": hourly, "total": total, "traffic": traffic}


def _replay(source: Path, target: Path, histogram_groups: int) -> None:
    """What the writer would have stored: the source's requests written again through the
    store's ingest path, process by process, in their order."""
    query = (
        "SELECT e.name, ru.rule, r.method, r.status, r.started_at, r.duration_ms, g.name,"
        " r.client_ip, r.is_outlier, r.threshold_ms, r.process_id FROM requests r"
        " JOIN endpoints e ON e.id = r.endpoint_id LEFT JOIN rules ru ON ru.id = r.rule_id"
        " LEFT JOIN user_groups g ON g.id = r.group_id ORDER BY r.id"
    )
    store = make_store(f"sqlite:///{target}", Limits(histogram_groups=histogram_groups))
    store.open()
    try:
        ids = {}
        for pid, host, os_pid, version, source_of, started, agent in rows(
            source,
            "SELECT p.id, p.hostname, p.pid, v.name, v.source, p.started_at, p.agent"
            " FROM processes p JOIN versions v ON v.id = p.version_id ORDER BY p.id",
        ):
            info = ProcessInfo(host, os_pid, version, source_of, started, agent)
            ids[pid] = store.register_process(info)
        batch: list[RequestRecord] = []
        batch_process = None
        for *fields, process in rows(source, query):
            if batch and process != batch_process:
                store.write_requests(ids[batch_process], batch)
                batch = []
            batch_process = process
            fields[8] = bool(fields[8])
            batch.append(RequestRecord(*fields))
            if len(batch) == 300:
                store.write_requests(ids[batch_process], batch)
                batch = []
        if batch:
            store.write_requests(ids[batch_process], batch)
    finally:
        store.close()


@pytest.mark.parametrize("histogram_groups", [50, 2], ids=["uncapped", "capped"])
def test_the_backfill_gives_what_the_writer_would_have_written(
    v3_sqlite: Path, tmp_path: Path, histogram_groups: int
) -> None:
    replayed = tmp_path / "replayed.sqlite3"
    _replay(v3_sqlite, replayed, histogram_groups)
    invoke("migrate", "-d", str(v3_sqlite), "--histogram-groups", str(histogram_groups))
    backfilled = _by_names(v3_sqlite)
    assert backfilled == _by_names(replayed)
    groups = {g for (_, _, g, _) in backfilled["latency"]}
    if histogram_groups == 2:  # the first two groups of each endpoint and version, then others
        assert "others" in groups
        assert len(groups) < 6
        assert_histograms_match_rows(v3_sqlite, capped=True)
    else:
        assert groups == {"alice", "bob", "carol", "127.0.0.1", None}


def test_an_interrupted_backfill_resumes_and_never_counts_a_row_twice(v3_store: Database) -> None:
    migrate_store(str(v3_store))  # the schema only: the backfill is pending
    conn = _connect(v3_store)
    try:
        assert backfill_state(conn).end == V3_ROWS
        assert backfill_state(conn).done == 0
        state = backfill_histograms(conn, batch_rows=300, max_batches=2)
        assert (state.done, state.pending) == (600, True)  # two batches, each committed
        assert sum(stored_tables(v3_store).hourly.values()) == 600
        # a batch that fails half-way leaves nothing of itself: its counts roll back with it
        told: list[int] = []

        def fail_after_a_batch(folded: int) -> None:
            told.append(folded)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            backfill_histograms(conn, batch_rows=500, progress=fail_after_a_batch)
        assert told == [500]
        assert backfill_state(conn).done == 1100
        _break_row(conn, 1500)
        with pytest.raises(OverflowError):
            backfill_histograms(conn, batch_rows=500)  # rows 1101..1600 hold the broken one
        assert backfill_state(conn).done == 1100
        assert sum(stored_tables(v3_store).hourly.values()) == 1100
        _mend_row(conn, 1500)
        state = backfill_histograms(conn, batch_rows=500)
        assert not state.pending
        assert state.done == V3_ROWS
        assert backfill_histograms(conn).done == V3_ROWS  # done: a no-op
    finally:
        conn.close()
    assert_histograms_match_rows(v3_store)


def _break_row(conn: StoreConnection, request_id: int) -> None:
    """Give a row a duration the fold cannot bucket (infinite: both backends keep it)."""
    infinite = "9e999" if conn.dialect == "sqlite" else "'Infinity'"
    with conn.transaction():
        conn.execute(f"UPDATE requests SET duration_ms = {infinite} WHERE id = ?", (request_id,))


def _mend_row(conn: StoreConnection, request_id: int) -> None:
    with conn.transaction():
        conn.execute("UPDATE requests SET duration_ms = 3.0 WHERE id = ?", (request_id,))


def _new_traffic(database: Database, make_app: Callable[..., Flask], requests: int) -> None:
    """Requests written by this flamewatch's writer (histograms at ingest) into the store."""
    app = make_app(database=str(database), version="2.0", group_by=lambda r: "dave")
    client = app.test_client()
    for i in range(requests):
        client.get(f"/items/{i}")
    flush(app)
    app.extensions["flamewatch"].close()


def test_rows_the_new_writer_adds_before_the_backfill_are_counted_once(
    v3_store: Database, make_app: Callable[..., Flask]
) -> None:
    migrate_store(str(v3_store))
    _new_traffic(v3_store, make_app, 40)  # above the watermark: counted at ingest
    assert rows(v3_store, "SELECT count(*) FROM requests WHERE id > ?", V3_ROWS)[0][0] == 40
    conn = _connect(v3_store)
    try:
        assert backfill_state(conn).end == V3_ROWS  # the migration's watermark
        backfill_histograms(conn, batch_rows=700)
    finally:
        conn.close()
    _new_traffic(v3_store, make_app, 10)
    found = assert_histograms_match_rows(v3_store)
    assert sum(found.hourly.values()) == V3_ROWS + 50


def test_pruning_raw_rows_keeps_those_the_backfill_waits_for_and_never_the_histograms(
    v3_store: Database, make_app: Callable[..., Flask]
) -> None:
    migrate_store(str(v3_store))
    _new_traffic(v3_store, make_app, 20)
    (captured,) = rows(v3_store, "SELECT count(*) FROM outliers")[0]
    assert captured >= 20  # the old store's; a loaded machine may flag some new ones too
    conn = _connect(v3_store)
    try:
        future = 4_000_000_000.0  # every row is older than this
        pruned = prune(conn, future)
        assert pruned.requests == 20  # only the new rows: the old ones wait for the backfill
        assert pruned.outliers == captured  # every captured outlier goes (the bulky part)
        assert rows(v3_store, "SELECT count(*) FROM requests")[0][0] == V3_ROWS
        backfill_histograms(conn)
        before = stored_tables(v3_store)
        assert sum(before.hourly.values()) == V3_ROWS + 20
        prune(conn, future)
    finally:
        conn.close()
    assert rows(v3_store, "SELECT count(*) FROM requests")[0][0] == 0
    assert stored_tables(v3_store) == before  # raw rows pruned, histograms as they were


def test_rows_changed_after_they_were_written_get_their_histograms_rebuilt(
    v3_store: Database,
) -> None:
    invoke("migrate", "-d", str(v3_store), "--quiet")
    conn = _connect(v3_store)
    try:
        with conn.transaction():  # half the rows moved seven hours on: the hours are stale
            conn.execute("UPDATE requests SET started_at = started_at + 25200 WHERE id % 2 = 0")
        with pytest.raises(AssertionError):
            assert_histograms_match_rows(v3_store)
        assert rebuild_histograms(conn) == V3_ROWS
        assert backfill_state(conn).end == V3_ROWS
        assert stored_tables(v3_store).hourly == Counter()  # forgotten until the backfill
    finally:
        conn.close()
    assert build_histograms(str(v3_store), quiet=True) == V3_ROWS
    found = assert_histograms_match_rows(v3_store)
    assert sum(found.hourly.values()) == V3_ROWS
    assert build_histograms(str(v3_store), quiet=True) == 0  # nothing folded twice


def test_reading_commands_build_the_histograms_of_an_upgraded_store(v3_sqlite: Path) -> None:
    result = invoke("summary", "-d", str(v3_sqlite), "--json")
    assert '"schema_version": 5' in result.output
    assert_histograms_match_rows(v3_sqlite)
    conn = open_connection(str(v3_sqlite))
    assert not histograms_pending(conn)
    conn.close()


def test_report_builds_the_histograms_first(v3_sqlite: Path, tmp_path: Path) -> None:
    result = invoke("report", "-d", str(v3_sqlite), "-o", str(tmp_path / "site"), "--quiet")
    assert result.output.strip().endswith("index.html")
    assert_histograms_match_rows(v3_sqlite)


def test_a_store_that_cannot_be_written_says_to_run_migrate(v3_sqlite: Path) -> None:
    v3_sqlite.chmod(0o444)
    v3_sqlite.parent.chmod(0o555)
    try:
        result = CliRunner().invoke(main, ["summary", "-d", str(v3_sqlite)])
    finally:
        v3_sqlite.parent.chmod(0o755)
        v3_sqlite.chmod(0o644)
    if result.exit_code == 0:
        pytest.skip("root may write any file")
    assert "run `flamewatch migrate --database" in result.output
    assert "Traceback" not in result.output


def test_copy_carries_a_pending_backfill(v3_sqlite: Path, pg_url: str) -> None:
    migrate_store(str(v3_sqlite))  # schema 4, histograms still to build
    invoke("copy", "--from", str(v3_sqlite), "--to", pg_url)
    conn = _connect(pg_url)
    try:
        assert backfill_state(conn).end == V3_ROWS
        assert histograms_pending(conn)
        backfill_histograms(conn)
    finally:
        conn.close()
    assert_histograms_match_rows(pg_url)
    for key in (BACKFILLED, BACKFILL_TO):
        assert rows(pg_url, "SELECT value FROM meta WHERE key = ?", key)[0][0] == str(V3_ROWS)


def test_a_store_created_new_has_nothing_to_backfill(store_db: Database) -> None:
    store = make_store(resolve_database(str(store_db), "."))
    store.open()
    store.close()
    conn = open_connection(str(store_db))
    try:
        assert not histograms_pending(conn)
        assert backfill_state(conn).end == 0
    finally:
        conn.close()


def test_hours_are_bucketed_like_the_writer_across_hour_boundaries(v3_sqlite: Path) -> None:
    conn = sqlite3.connect(v3_sqlite)
    conn.execute("UPDATE requests SET started_at = started_at - 1800 * (id % 7)")  # 7 hours
    conn.commit()
    conn.close()
    invoke("migrate", "-d", str(v3_sqlite))
    found = assert_histograms_match_rows(v3_sqlite)
    assert len({hour for (_, _, hour, _) in found.hourly}) >= 4
