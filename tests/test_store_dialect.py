"""One SQL dialect layer for reads and writes, and retention through the store's interface."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from flamewatch.sampler.store import ProcessInfo, Store, StoreError, make_store
from flamewatch.sampler.store.connection import connection_of
from flamewatch.sampler.store.dialect import pyformat


def _store(store_db: Path | str) -> Store:
    url = store_db if isinstance(store_db, str) else f"sqlite:///{store_db}"
    store = make_store(url)
    store.open()
    return store


def test_pyformat_turns_placeholders_outside_quoted_strings_only() -> None:
    assert pyformat("SELECT '?', ?, 'it''s 50%?', 7 % 4 WHERE a = ?") == (
        "SELECT '?', %s, 'it''s 50%%?', 7 %% 4 WHERE a = %s"
    )


def test_quoted_question_marks_and_percents_reach_the_database_as_written(
    store_db: Path | str,
) -> None:
    store = _store(store_db)
    try:
        row = connection_of(store).execute("SELECT '?', ?, 'it''s 50%?', 7 % 4", (1,)).fetchone()
    finally:
        store.close()
    assert tuple(row) == ("?", 1, "it's 50%?", 3)


def test_the_store_writes_names_holding_placeholder_characters(store_db: Path | str) -> None:
    store = _store(store_db)
    try:
        store.set_monitored("search?q=%s", False)
        store.set_monitored("'?'", True)
        flags = store.monitor_flags()
    finally:
        store.close()
    assert flags == {"search?q=%s": False, "'?'": True}


def test_retention_is_claimed_and_run_through_the_store(store_db: Path | str) -> None:
    store = _store(store_db)
    now = time.time()
    try:
        process_id = store.register_process(
            ProcessInfo("host", 1, "1.0", "config", now - 86_400 * 3, "flamewatch test")
        )
        old = ("old", "/old", "GET", 200, now - 86_400 * 2, 5.0, None, None, False, None, None)
        new = ("new", "/new", "GET", 200, now, 5.0, None, None, False, None, None)
        store.write_requests(process_id, [old, old, new])
        assert store.claim_retention_run(3600)
        assert not store.claim_retention_run(3600)  # claimed within the interval: not again
        pruned = store.prune(now - 86_400)
        left = connection_of(store).execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        store.close()
    assert (pruned.requests, pruned.done) == (2, True)
    assert left == 1


def test_a_store_without_sql_has_no_connection_to_give() -> None:
    with pytest.raises(StoreError, match="has no SQL connection"):
        connection_of(object())


def test_two_json_lists_of_a_group_pair_their_values_row_by_row(store_db: Path | str) -> None:
    """The readers build a histogram from a group's buckets and counts, two JSON arrays of one
    ``GROUP BY`` zipped together: a count must land on its own bucket on both backends."""
    store = _store(store_db)
    rows = [(k, bucket, bucket * 10 + k) for k in (2, 1) for bucket in (7, -3, 40, 0, 5)]
    try:
        conn = connection_of(store)
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE cells (k INTEGER, bucket INTEGER, count BIGINT)")
            conn.executemany("INSERT INTO cells (k, bucket, count) VALUES (?, ?, ?)", rows)
            found = {
                k: dict(zip(orjson.loads(buckets), orjson.loads(counts), strict=True))
                for k, buckets, counts in conn.execute(
                    f"SELECT k, {conn.json_list('bucket', 'bucket')},"
                    f" {conn.json_list('count', 'bucket')} FROM cells GROUP BY k"
                ).fetchall()
            }
            conn.execute("DROP TABLE cells")
    finally:
        store.close()
    assert found == {k: {b: b * 10 + k for b in (7, -3, 40, 0, 5)} for k in (1, 2)}
