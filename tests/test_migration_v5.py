"""Upgrading a store of schema 4 to schema 5: the migration fills the coarser tables
(``latency_version``, ``group_hits``, ``latency_daily``, ``traffic_daily``, ``hits_hourly``,
``process_hits``)
with the grouped sums of schema 4's tables, in one ``INSERT ... SELECT ... GROUP BY`` each;
the writer then keeps them equal to those sums batch after batch, and the histogram retention
prunes them so that they stay equal.

The store of schema 4 is vendored (``tests/data/store-v4``, made by the previous release's
real writer; its README says how). PostgreSQL gets the same rows in a schema created by the
first four migrations only.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import Database, rows
from histogram_check import (
    assert_coarse_tables_match,
    assert_histograms_match_rows,
    coarse_tables,
    stored_tables,
)

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.cli import main
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import ProcessInfo, RequestRecord, make_store, resolve_database
from flamewatch.sampler.store.connection import open_connection
from flamewatch.sampler.store.postgres import translate
from flamewatch.sampler.store.retention import prune_histograms
from flamewatch.sampler.store.schema import MIGRATIONS

V4_STORE = Path(__file__).parent / "data" / "store-v4" / "store.sqlite3"
V4_ROWS = 2000
V4_TABLES = (
    "versions",
    "endpoints",
    "rules",
    "user_groups",
    "processes",
    "requests",
    "outliers",
    "latency",
    "latency_hourly",
    "latency_total",
    "traffic",
)
NEW_TABLES = (
    "latency_version",
    "group_hits",
    "latency_daily",
    "traffic_daily",
    "hits_hourly",
    "process_hits",
)
DAY = 86_400.0


def _v4_postgres(url: str) -> None:
    """The vendored store's rows in a PostgreSQL schema of version 4, ids kept."""
    import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

    source = sqlite3.connect(V4_STORE)
    with psycopg.connect(url, autocommit=True) as conn:
        for statements in MIGRATIONS[:4]:
            for statement in statements:
                conn.execute(translate(statement))
        conn.execute("INSERT INTO meta VALUES ('schema_version', '4')")
        with conn.transaction():
            for table in V4_TABLES:
                cursor = source.execute(f"SELECT * FROM {table}")
                names = ", ".join(d[0] for d in cursor.description)
                with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in cursor:
                        copy.write_row(row)
                if "id" in names.split(", "):
                    conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id))"
                        f" FROM {table}"
                    )
    source.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def v4_store(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The vendored schema-4 store, as a SQLite copy or in PostgreSQL."""
    if request.param == "sqlite":
        copy = tmp_path / "v4.sqlite3"
        shutil.copyfile(V4_STORE, copy)
        return copy
    url: str = request.getfixturevalue("pg_url")
    _v4_postgres(url)
    return url


def _migrate(database: Database) -> str:
    result = CliRunner().invoke(main, ["migrate", "-d", str(database)])
    assert result.exit_code == 0, result.output
    return result.output


def _write(database: Database, version: str, records: list[RequestRecord]) -> None:
    """``records`` written by a process of ``version`` started with the first of them."""
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        started = min(r.started_at for r in records)
        process = store.register_process(ProcessInfo("h", 7, version, "config", started, "t"))
        store.write_requests(process, records)
    finally:
        store.close()


def _record(started_at: float, endpoint: str, group: str | None, ms: float) -> RequestRecord:
    return RequestRecord(
        endpoint=endpoint,
        rule=f"/{endpoint}",
        method="GET",
        status=200,
        started_at=started_at,
        duration_ms=ms,
        group=group,
        client_ip=None,
        is_outlier=ms > 100,
        threshold_ms=100.0,
    )


def test_the_vendored_store_is_of_schema_4() -> None:
    assert rows(V4_STORE, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "4"
    tables = {name for (name,) in rows(V4_STORE, "SELECT name FROM sqlite_master")}
    assert "latency" in tables
    assert not tables & set(NEW_TABLES)
    assert rows(V4_STORE, "SELECT count(*) FROM requests")[0][0] == V4_ROWS
    assert sum(stored_tables(V4_STORE).latency.values()) == V4_ROWS


def test_the_migration_fills_the_new_tables_with_the_grouped_sums(v4_store: Database) -> None:
    before = stored_tables(v4_store)
    assert _migrate(v4_store) == "schema version 4 -> 5: migrated\n"
    assert stored_tables(v4_store) == before  # schema 4's tables untouched
    coarse = assert_coarse_tables_match(v4_store, before)
    assert sum(coarse.versions.values()) == sum(coarse.groups.values()) == V4_ROWS
    assert sum(coarse.daily.values()) == V4_ROWS
    assert sum(hits for hits, _, _ in coarse.daily_traffic.values()) == V4_ROWS
    assert sum(outliers for _, outliers in coarse.hits.values()) == 41
    assert {g for (_, _, g) in coarse.groups} == {0, 1, 2, 3, 4}  # 3 users, an address, none
    assert_histograms_match_rows(v4_store)  # and all of them agree with the rows
    assert _migrate(v4_store) == "schema version 5: already current\n"
    assert coarse_tables(v4_store) == coarse  # nothing added twice


def test_after_the_migration_the_writer_keeps_the_new_tables_equal_to_the_sums(
    v4_store: Database,
) -> None:
    _migrate(v4_store)
    now = time.time()
    days_ago = [now - 3 * DAY + i * 600 for i in range(30)]  # other days than the store's
    _write(
        v4_store, "1.1", [_record(t, "search", "alice", 3.0 + i) for i, t in enumerate(days_ago)]
    )
    _write(v4_store, "2.0", [_record(now - i, "items", None, 150.0) for i in range(20)])
    found = assert_histograms_match_rows(v4_store)
    assert sum(found.latency.values()) == V4_ROWS + 50
    coarse = coarse_tables(v4_store)
    assert len({day for (_, _, day, _) in coarse.daily}) >= 2
    assert sum(coarse.versions.values()) == V4_ROWS + 50


def test_a_report_on_a_schema_4_store_migrates_it_and_reads_the_new_tables(
    v4_store: Database, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main, ["report", "-d", str(v4_store), "-o", str(tmp_path / "site"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert rows(v4_store, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0] == "5"
    with open_readonly(str(v4_store)) as conn:
        data = ReportData(conn)
        hits = {row.name: row.hits for row in data.endpoints()}
        assert sum(hits.values()) == V4_ROWS
        assert sum(box.count for box in data.box_by_endpoint().values()) == V4_ROWS
        assert sum(h.count for h in data.hourly_hits()) == V4_ROWS


def test_histogram_retention_prunes_whole_days_and_keeps_the_tables_agreeing(
    v4_store: Database,
) -> None:
    _migrate(v4_store)
    now = time.time()
    old = [now - 20 * DAY + i * 3600 for i in range(30)]  # 30 hours over two days
    _write(v4_store, "0.9", [_record(t, "ancient", "bob", 5.0) for t in old])
    conn = open_connection(str(v4_store), readonly=False)
    try:
        cutoff = old[0] + DAY  # mid-way into the old stretch: rounded down to a whole day
        first = prune_histograms(conn, cutoff)
        assert first.done
        assert first.hours > 0
        assert_coarse_tables_match(v4_store)  # the hourly and daily tables keep the same days
        hours = {h for (_, h) in coarse_tables(v4_store).hits}
        assert min(hours) >= int(cutoff // DAY) * DAY
        again = prune_histograms(conn, cutoff)
        assert (again.rows, again.batches) == (0, 0)
        prune_histograms(conn, now - 10 * DAY)  # version 0.9 last seen before: all of it
    finally:
        conn.close()
    assert_coarse_tables_match(v4_store)
    names = dict(rows(v4_store, "SELECT id, name FROM versions"))
    assert "0.9" not in {names[v] for (_, v, _) in coarse_tables(v4_store).versions}
