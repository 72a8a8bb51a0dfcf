"""Moving stores: ``flamewatch migrate``, ``copy`` between SQLite and PostgreSQL, ``prune``,
and the retention setting -- on real stores of both kinds."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from helpers import Database, flush, is_pg, regression_history, rows
from histogram_check import assert_histograms_match_rows, stored_tables

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.cli import main
from flamewatch.reports.outliers import list_outliers, load_outlier
from flamewatch.reports.summary import open_readonly, summarize
from flamewatch.sampler.store import (
    SCHEMA_VERSION,
    OutlierCapture,
    ProcessInfo,
    RequestRecord,
    make_store,
    resolve_database,
)
from flamewatch.sampler.store.connection import connection_of
from flamewatch.sampler.store.postgres import translate
from flamewatch.sampler.store.retention import claim_retention_run
from flamewatch.sampler.store.schema import MIGRATIONS

NOW = 1_790_000_000.0  # a fixed "now" for the report's last day / week
DAY = 86_400.0


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def report_numbers(database: Database) -> dict[str, Any]:
    """Everything the report shows, read through the report's own code."""
    with open_readonly(str(database)) as conn:
        data = ReportData(conn, now=NOW, max_groups=2)
        return {
            "endpoints": data.endpoints(),
            "versions": data.versions(),
            "changes": data.changes(),
            "hourly": data.hourly_hits(),
            "by_version": data.boxes_by_version(),
            "by_group": data.boxes_by_group(),
            "by_group_version": data.boxes_by_group_version(),
        }


def outliers_of(database: Database) -> list[tuple[Any, ...]]:
    found = []
    for row in list_outliers(str(database)):
        stored = load_outlier(str(database), row.id)
        found.append((row, stored["request"], stored["profile"], stored["threshold_stack"]))
    return found


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store made by real traffic over two versions, with profiled outliers."""
    return regression_history(tmp_path_factory, "history")


def test_copy_sqlite_to_postgres_and_back_keeps_every_row_and_the_report(
    history: Path, pg_url: str, tmp_path: Path
) -> None:
    result = invoke("copy", "--from", str(history), "--to", pg_url)
    (requests,) = rows(history, "SELECT count(*) FROM requests")[0]
    (outliers,) = rows(history, "SELECT count(*) FROM outliers")[0]
    assert outliers > 0
    assert f"({requests} requests, {outliers} outliers)" in result.output
    back = tmp_path / "back.sqlite3"
    invoke("copy", "--from", pg_url, "--to", str(back))

    for table in ("versions", "endpoints", "rules", "user_groups", "processes", "requests"):
        want = rows(history, f"SELECT * FROM {table} ORDER BY id")
        assert [tuple(r) for r in rows(pg_url, f"SELECT * FROM {table} ORDER BY id")] == [
            tuple(r) for r in want
        ], table
        assert [tuple(r) for r in rows(back, f"SELECT * FROM {table} ORDER BY id")] == [
            tuple(r) for r in want
        ], table
    histograms = assert_histograms_match_rows(history)
    assert sum(histograms.hourly.values()) == requests
    assert stored_tables(pg_url) == histograms  # ids kept: the same keys
    assert stored_tables(back) == histograms
    want_report = report_numbers(history)
    assert report_numbers(pg_url) == want_report
    assert report_numbers(back) == want_report
    assert outliers_of(pg_url) == outliers_of(history) == outliers_of(back)  # profiles too
    pg_summary, sqlite_summary = summarize(pg_url).to_json(), summarize(str(history)).to_json()
    assert {**pg_summary, "path": ""} == {**sqlite_summary, "path": ""}


def test_a_copied_postgres_store_takes_new_rows_after_the_copied_ids(
    history: Path, pg_url: str
) -> None:
    invoke("copy", "--from", str(history), "--to", pg_url)
    (top,) = rows(history, "SELECT max(id) FROM requests")[0]
    store = make_store(pg_url)
    store.open()
    try:
        process = store.register_process(ProcessInfo("h", 1, "3.0", "config", NOW, "t"))
        store.write_requests(process, [_record(NOW, "checkout", capture=True)])
    finally:
        store.close()
    assert rows(pg_url, "SELECT max(id) FROM requests")[0][0] == top + 1


def test_copy_into_a_store_that_holds_rows_is_refused(history: Path, pg_url: str) -> None:
    invoke("copy", "--from", str(history), "--to", pg_url)
    (before,) = rows(pg_url, "SELECT count(*) FROM requests")[0]
    result = CliRunner().invoke(main, ["copy", "--from", str(history), "--to", pg_url])
    assert result.exit_code == 1
    assert "the target store already holds rows" in result.output
    assert "Traceback" not in result.output
    assert rows(pg_url, "SELECT count(*) FROM requests")[0][0] == before


def _version_1_store(database: Database) -> None:
    if is_pg(database):
        import psycopg  # noqa: PLC0415 -- optional (postgres extra; SQLite tests run without)

        with psycopg.connect(str(database), autocommit=True) as conn:
            for statement in MIGRATIONS[0]:
                conn.execute(translate(statement))
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        return

    conn_sqlite = sqlite3.connect(database, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn_sqlite.execute(statement)
    conn_sqlite.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn_sqlite.close()


def test_migrate_reports_the_versions_and_is_idempotent(store_db: Database) -> None:
    _version_1_store(store_db)
    result = invoke("migrate", "--database", str(store_db))
    assert result.output == f"schema version 1 -> {SCHEMA_VERSION}: migrated\n"
    assert rows(store_db, "SELECT count(*) FROM outliers")[0][0] == 0
    result = invoke("migrate", "-d", str(store_db))
    assert result.output == f"schema version {SCHEMA_VERSION}: already current\n"


def test_copy_refuses_a_source_with_an_older_schema(pg_url: str, tmp_path: Path) -> None:
    _version_1_store(pg_url)
    result = CliRunner().invoke(main, ["copy", "--from", pg_url, "--to", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "run `flamewatch migrate --database" in result.output


def test_migrate_of_a_missing_sqlite_store_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate", "-d", str(tmp_path / "nope.sqlite3")])
    assert result.exit_code == 1
    assert result.output == f"Error: no flamewatch store at '{tmp_path / 'nope.sqlite3'}'\n"


# -- prune and retention ------------------------------------------------------------------------


def _record(started_at: float, endpoint: str, *, capture: bool = False) -> RequestRecord:
    return RequestRecord(
        endpoint=endpoint,
        rule=f"/{endpoint}",
        method="GET",
        status=200,
        started_at=started_at,
        duration_ms=120.0 if capture else 2.0,
        group="alice",
        client_ip="127.0.0.1",
        is_outlier=capture,
        threshold_ms=10.0,
        capture=OutlierCapture({"path": f"/{endpoint}"}, {}, None, b"profile", 3)
        if capture
        else None,
    )


def _aged_store(database: Database, *, old: int, new: int, now: float) -> None:
    """``old`` requests 10 days old and ``new`` ones from today; every fifth an outlier."""
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        process = store.register_process(ProcessInfo("h", 1, "1.0", "config", now, "t"))
        records = [_record(now - 10 * DAY + i, "old", capture=i % 5 == 0) for i in range(old)]
        records += [_record(now - 60 + i / 1000, "new", capture=i % 5 == 0) for i in range(new)]
        store.write_requests(process, records)
    finally:
        store.close()


def _counts(database: Database) -> tuple[int, int, int, int]:
    old_requests, new_requests = (
        rows(
            database,
            "SELECT count(*) FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
            " WHERE e.name = ?",
            name,
        )[0][0]
        for name in ("old", "new")
    )
    old_outliers, new_outliers = (
        rows(
            database,
            "SELECT count(*) FROM outliers o JOIN requests r ON r.id = o.request_id"
            " JOIN endpoints e ON e.id = r.endpoint_id WHERE e.name = ?",
            name,
        )[0][0]
        for name in ("old", "new")
    )
    return old_requests, old_outliers, new_requests, new_outliers


def test_prune_deletes_old_rows_in_batches(store_db: Database) -> None:
    _aged_store(store_db, old=100, new=20, now=time.time())
    result = invoke("prune", "-d", str(store_db), "--older-than", "5", "--batch-size", "7")
    # 20 outliers in 3 batches (7, 7, 6), then 100 requests in 15 batches (14 full, 1 of 2)
    want = "deleted 20 outliers and 100 requests older than 5 days in 18 batches\n"
    assert result.output == want
    assert _counts(store_db) == (0, 0, 20, 4)


def test_prune_profiles_only_keeps_the_timings(store_db: Database) -> None:
    _aged_store(store_db, old=100, new=20, now=time.time())
    result = invoke("prune", "-d", str(store_db), "--older-than", "5", "--profiles-only")
    assert "deleted 20 outliers and 0 requests" in result.output
    assert "(request timings kept)" in result.output
    assert _counts(store_db) == (100, 0, 20, 4)
    assert rows(store_db, "SELECT count(*) FROM requests WHERE is_outlier = 1")[0][0] == 24


def test_retention_setting_prunes_from_the_writer(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    _aged_store(store_db, old=30, new=10, now=time.time())
    app = make_app(database=str(store_db), retention_days=5)
    app.test_client().get("/")
    flush(app)  # the writer's round: write, then a retention run (claimed: the first one)
    assert _counts(store_db) == (0, 0, 10, 2)
    assert app.extensions["flamewatch"]._writer.pruned == 36
    (claimed,) = rows(store_db, "SELECT value FROM meta WHERE key = 'retention_run_at'")[0]
    assert time.time() - float(claimed) < 60


def test_one_process_per_interval_claims_the_retention_run(store_db: Database) -> None:
    store = make_store(resolve_database(str(store_db), "."))
    store.open()
    try:
        conn = connection_of(store)
        assert claim_retention_run(conn, 3600, now=NOW)
        assert not claim_retention_run(conn, 3600, now=NOW + 10)  # another worker, same hour
        assert claim_retention_run(conn, 3600, now=NOW + 3601)
    finally:
        store.close()


def test_a_copy_that_fails_writes_nothing_and_says_why(pg_url: str, tmp_path: Path) -> None:
    source = tmp_path / "broken.sqlite3"
    _aged_store(source, old=0, new=10, now=NOW)

    conn = sqlite3.connect(source)  # SQLite does not enforce references; PostgreSQL does
    conn.execute("UPDATE requests SET group_id = 999 WHERE id = 5")
    conn.commit()
    conn.close()
    result = CliRunner().invoke(main, ["copy", "--from", str(source), "--to", pg_url])
    assert result.exit_code == 1
    assert "Error: the copy failed and wrote nothing:" in result.output
    assert "Traceback" not in result.output
    assert rows(pg_url, "SELECT count(*) FROM requests")[0][0] == 0
    assert rows(pg_url, "SELECT count(*) FROM versions")[0][0] == 0


def _tiered_store(database: Database, now: float) -> None:
    """Rows of three ages: version 0.9 20 days ago (never seen since), version 1.0 six days
    ago and one minute ago."""
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        old = store.register_process(ProcessInfo("h", 1, "0.9", "config", now - 20 * DAY, "t"))
        hour = (now - 20 * DAY) // 3600 * 3600  # all 12 in one hour, one bucket
        store.write_requests(old, [_record(hour + i, "ancient") for i in range(12)])
        current = store.register_process(ProcessInfo("h", 2, "1.0", "config", now, "t"))
        store.write_requests(current, [_record(now - 6 * DAY + i, "old") for i in range(8)])
        store.write_requests(current, [_record(now - 60 + i, "new") for i in range(5)])
    finally:
        store.close()


def _hits(database: Database, table: str, endpoint: str) -> int:
    column = (
        "hits" if table in ("traffic", "traffic_daily", "hits_hourly", "group_hits") else "count"
    )
    (found,) = rows(
        database,
        f"SELECT coalesce(sum({column}), 0) FROM {table} t JOIN endpoints e"
        " ON e.id = t.endpoint_id WHERE e.name = ?",
        endpoint,
    )[0]
    return int(found)


def _histogram_hits(database: Database) -> dict[str, tuple[int, ...]]:
    """Per endpoint: its counts in latency, latency_hourly, latency_total and traffic, then in
    schema 5's latency_version, group_hits, latency_daily, traffic_daily and hits_hourly."""
    tables = (
        "latency",
        "latency_hourly",
        "latency_total",
        "traffic",
        "latency_version",
        "group_hits",
        "latency_daily",
        "traffic_daily",
        "hits_hourly",
    )
    return {
        name: tuple(_hits(database, table, name) for table in tables)
        for name in ("ancient", "old", "new")
    }


def test_pruning_raw_rows_keeps_every_histogram(store_db: Database) -> None:
    _tiered_store(store_db, time.time())
    before = stored_tables(store_db)
    result = invoke("prune", "-d", str(store_db), "--older-than", "5")
    assert "deleted 0 outliers and 20 requests older than 5 days" in result.output
    assert rows(store_db, "SELECT count(*) FROM requests")[0][0] == 5
    assert stored_tables(store_db) == before
    assert _histogram_hits(store_db) == {
        "ancient": (12,) * 9,
        "old": (8,) * 9,
        "new": (5,) * 9,
    }


def test_pruning_histograms_deletes_old_hours_and_versions_last_seen_before(
    store_db: Database,
) -> None:
    _tiered_store(store_db, time.time())
    result = invoke("prune", "-d", str(store_db), "--histograms-older-than", "10")
    # the hour of 20 days ago (its hourly, traffic and hits rows), its day (daily histogram,
    # traffic and process rows), and version 0.9's all-time rows (latency, latency_version,
    # group_hits)
    assert result.output == (
        "deleted 9 histogram rows older than 10 days (1 hours, 1 endpoint versions) in 3 batches\n"
    )
    assert rows(store_db, "SELECT count(*) FROM requests")[0][0] == 25  # raw rows untouched
    assert _histogram_hits(store_db) == {
        "ancient": (0, 0, 12, *(0,) * 6),  # the cumulative counts behind the metrics stay
        "old": (8,) * 9,
        "new": (5,) * 9,
    }
    again = invoke("prune", "-d", str(store_db), "--histograms-older-than", "10")
    assert again.output.startswith("deleted 0 histogram rows")


def test_prune_needs_a_cutoff(store_db: Database) -> None:
    result = CliRunner().invoke(main, ["prune", "-d", str(store_db)])
    assert result.exit_code == 2
    assert "give --older-than DAYS, --histograms-older-than DAYS, or both" in result.output


def test_both_retention_settings_prune_from_the_writer(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    _tiered_store(store_db, time.time())
    app = make_app(database=str(store_db), retention_days=5, histogram_retention_days=10)
    app.test_client().get("/")
    # each flush is a writer's round: write, then RETENTION_BATCHES_PER_ROUND batches of
    # retention (raw rows first, then histograms); the histograms here take three batches,
    # so two rounds finish them. One flush passed only when the writer's first round, on
    # its own, had run the first batches before it (not so on a loaded machine)
    for _ in range(3):
        flush(app)
    assert rows(store_db, "SELECT count(*) FROM requests")[0][0] == 6  # 5 new, and "/"
    assert _histogram_hits(store_db) == {
        "ancient": (0, 0, 12, *(0,) * 6),
        "old": (8,) * 9,  # raw rows gone, histograms kept
        "new": (5,) * 9,
    }
    writer = app.extensions["flamewatch"]._writer
    assert (writer.pruned, writer.pruned_histograms) == (20, 9)
