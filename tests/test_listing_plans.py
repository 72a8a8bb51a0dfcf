"""Listing outliers costs what it lists: the captured outliers drive the join, never the
stored requests. Checked by each backend's own plan (``EXPLAIN``) over a store whose
``requests`` table is large next to its ``outliers`` table, as every real store's is."""

from __future__ import annotations

from pathlib import Path

from helpers import is_pg

from flamewatch.reports import outliers
from flamewatch.reports.outliers import list_outliers
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import make_store, resolve_database
from flamewatch.sampler.store.connection import StoreConnection, open_connection

REQUESTS = 20_000
CAPTURED = (7, 19_000)  # the request ids that carry an outlier capture


def _store_of_many_requests(database: Path | str, tmp_path: Path) -> str:
    """A store (its schema made by the store itself) of :data:`REQUESTS` requests, two of
    them captured as outliers, with PostgreSQL's planner statistics taken."""
    url = resolve_database(str(database), tmp_path)
    store = make_store(url)
    store.open()
    store.close()
    conn = open_connection(url, readonly=False)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO versions (id, name, source, first_seen, last_seen)"
                " VALUES (1, 'v1', 'config', 0, 0)"
            )
            conn.execute(
                "INSERT INTO endpoints (id, name, first_seen, last_seen) VALUES (1, 'shop', 0, 0)"
            )
            conn.execute(
                "INSERT INTO processes (id, hostname, pid, version_id, agent, started_at,"
                " last_seen) VALUES (1, 'web-1', 1, 1, 'test', 0, 0)"
            )
            conn.executemany(
                "INSERT INTO requests (id, endpoint_id, version_id, process_id, method, status,"
                " started_at, duration_ms, is_outlier) VALUES (?, 1, 1, 1, 'GET', 200, ?, ?, ?)",
                [(i, float(i), 1.0 + i % 7, int(i in CAPTURED)) for i in range(1, REQUESTS + 1)],
            )
            conn.executemany(
                "INSERT INTO outliers (request_id, request_json, resources_json)"
                " VALUES (?, ?, '{}')",
                [(i, f'{{"path": "/shop/{i}"}}') for i in CAPTURED],
            )
        if conn.is_postgres:  # its autovacuum takes them on a real store; SQLite takes none
            conn.execute("ANALYZE")
            conn.raw.commit()
    finally:
        conn.close()
    return url


def _plan(conn: StoreConnection, sql: str, args: tuple[object, ...]) -> str:
    if conn.is_postgres:
        return "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql, args).fetchall())
    return "\n".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))


def _listing_queries() -> dict[str, tuple[str, tuple[object, ...]]]:
    """The queries of a listing and of one outlier, as :mod:`.outliers` runs them."""
    o = outliers
    order = "SELECT o.id" + o._FROM + " WHERE " + o._JOINED
    newest_first = " ORDER BY r.started_at DESC, o.id DESC"
    return {
        "order": (order + newest_first, ()),
        "order of one endpoint": (order + " AND e.name = ?" + newest_first + " LIMIT 5", ("shop",)),
        "one outlier": (
            o._COLUMNS + o._DETAILS + o._FROM + f" WHERE {o._JOINED} AND o.id = ?",
            (1,),
        ),
    }


def test_listing_outliers_never_scans_the_requests(store_db: Path | str, tmp_path: Path) -> None:
    url = _store_of_many_requests(store_db, tmp_path)
    with open_readonly(url) as conn:
        for name, (sql, args) in _listing_queries().items():
            plan = _plan(conn, sql, args)
            if is_pg(url):
                assert "Seq Scan on requests" not in plan, (name, plan)
                assert "Index Scan using requests_started_at" not in plan, (name, plan)
            else:  # SQLite: requests only searched by its key, once per outlier
                assert "SCAN r" not in plan, (name, plan)
                assert "SEARCH r USING INTEGER PRIMARY KEY" in plan, (name, plan)
        listed = list_outliers(conn)
    assert [row.path for row in listed] == ["/shop/19000", "/shop/7"]  # newest first
    with open_readonly(url) as conn:
        assert [row.path for row in list_outliers(conn, endpoint="shop", limit=1)] == [
            "/shop/19000"
        ]
