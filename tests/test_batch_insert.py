"""A batch of requests is stored row for row, whatever its size: the SQLite store inserts rows
many per statement (64, then 32, 16, ... 1 for the rest), the PostgreSQL store copies them; on
both, every record is one row holding its values, rows missing the same columns keep their
records' order, and the histograms are what the rows make."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import Database, rows
from histogram_check import assert_histograms_match_rows

from flamewatch.sampler.store import ProcessInfo, RequestFields, make_store, resolve_database


def _records(count: int, now: float) -> list[RequestFields]:
    """``count`` records with distinct durations, missing a rule, a group or a client address
    in turns (so that rows missing different columns interleave), with two endpoints and two
    statuses interleaved, the first 50 in the UTC hour before the rest (from ``now``) --
    records 40 to 59 alike but for their times, so that a run of them crosses the hour."""
    records: list[RequestFields] = []
    for i in range(count):
        k = 0 if 40 <= i < 60 else i
        records.append(
            (
                "search" if k % 2 else "item",
                None if k % 5 == 1 else "/search",
                "POST" if k % 7 == 0 else "GET",
                500 if k % 11 == 0 else 200,
                now + i * 0.001,
                1.0 + i * 0.25,
                None if k % 3 == 2 else f"user{k % 4}",
                None if k % 13 == 5 else "10.0.0.1",
                i % 17 == 0,
                None if i < 3 else 9.5,
                None,
            )
        )
    return records


@pytest.mark.parametrize("count", [1, 64, 203], ids=["one", "one-full-statement", "203-rows"])
def test_every_record_of_a_batch_is_one_row_in_order(
    store_db: Database, tmp_path: Path, count: int
) -> None:
    url = resolve_database(str(store_db), tmp_path)
    store = make_store(url)
    store.open()
    now = time.time() // 3600 * 3600 - 0.05  # 50 ms before an hour begins
    records = _records(count, now)
    try:
        process_id = store.register_process(
            ProcessInfo("host", 1, "1.0", "config", now, "flamewatch test")
        )
        store.write_requests(process_id, records)
    finally:
        store.close()
    stored = rows(
        store_db,
        "SELECT r.id, e.name, ru.rule, r.method, r.status, r.started_at, r.duration_ms,"
        " g.name, r.client_ip, r.is_outlier, r.threshold_ms FROM requests r"
        " JOIN endpoints e ON e.id = r.endpoint_id LEFT JOIN rules ru ON ru.id = r.rule_id"
        " LEFT JOIN user_groups g ON g.id = r.group_id ORDER BY r.id",
    )
    by_duration = {row[6]: tuple(row) for row in stored}
    assert len(by_duration) == len(stored) == count
    for record in records:
        endpoint, rule, method, status, started, duration, group, ip, outlier, threshold, _ = record
        row = by_duration[duration]
        assert row[1:] == (
            endpoint,
            rule,
            method,
            status,
            pytest.approx(started, abs=1e-6),
            duration,
            group,
            ip,
            int(outlier),
            threshold,
        )

    # records missing the same columns are stored in their order (their ids increase)
    def missing(record: RequestFields) -> tuple[bool, ...]:
        return (record[1] is None, record[6] is None, record[7] is None)

    ids = {row[6]: row[0] for row in stored}
    for kind in {missing(record) for record in records}:
        same = [ids[record[5]] for record in records if missing(record) == kind]
        assert same == sorted(same)
    assert_histograms_match_rows(store_db)
