"""The report's numbers, read from latency histograms, against the exact ones, on both backends.

A store small enough to keep every duration is written through the store's own write path
with durations drawn from shapes that stress a histogram (a wide log-normal, two modes, a heavy
tail, a narrow peak where many requests share a bucket), across two versions and several
users. Every quantile the report shows -- q1, median, q3, p90, p99, and the minimum and
maximum -- must be within 1 % of the exact nearest-rank quantile of the stored durations,
everywhere it is shown: the endpoint table, the boxes per endpoint, version, group and group x
version, and ``flamewatch summary``. Counts (hits, outliers, per process) must be exact.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import durations_by, rows
from test_aggregate import WITHIN, binned, box_of, expected_verdict, mann_whitney, median_interval

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.cli import main
from flamewatch.reports.hosts import process_rows
from flamewatch.reports.model import Box
from flamewatch.reports.summary import open_readonly, summarize
from flamewatch.sampler.store import (
    ProcessInfo,
    RequestRecord,
    StoreError,
    make_store,
    resolve_database,
)
from flamewatch.sampler.store.schema import MIGRATIONS

START = 1.7e9
USERS = [f"user-{i}" for i in range(6)] + [None]
SHOWN = ("minimum", "q1", "median", "q3", "p90", "p99", "maximum")


def _draw(endpoint: str, version: str, rng: random.Random) -> float:
    """A duration (ms) of ``endpoint`` in ``version``: ``wide`` is 60 % slower in 2.0."""
    if endpoint == "wide":
        return rng.lognormvariate(2.0, 1.0) * (1.6 if version == "2.0" else 1.0)
    if endpoint == "two-modes":
        return rng.gauss(3.0, 0.2) if rng.random() < 0.85 else rng.gauss(180.0, 20.0)
    if endpoint == "heavy-tail":
        return rng.paretovariate(1.3) * 4.0
    return 12.0 + rng.random() * 0.3  # "narrow": a few buckets hold every request


ENDPOINTS = ("wide", "two-modes", "heavy-tail", "narrow")


def write_store(database: Path | str, per_version: int = 700) -> None:
    """Requests of every endpoint in versions 1.0 then 2.0, from two processes each."""
    rng = random.Random(11)
    store = make_store(resolve_database(str(database), "."))
    store.open()
    try:
        for v, version in enumerate(("1.0", "2.0")):
            for pid in (1, 2):
                info = ProcessInfo(f"host-{pid}", 100 * v + pid, version, "config", START, "t")
                process = store.register_process(info)
                records = []
                for i in range(per_version // 2):
                    endpoint = ENDPOINTS[i % len(ENDPOINTS)]
                    ms = max(_draw(endpoint, version, rng), 0.01)
                    when = START + v * 86_400 + i * 7.0
                    user = USERS[rng.randrange(len(USERS))]
                    records.append(
                        RequestRecord(
                            endpoint,
                            f"/{endpoint}",
                            "GET",
                            200,
                            when,
                            ms,
                            user,
                            None,
                            i % 50 == 0,
                            None,
                        )
                    )
                store.write_requests(process, records)
    finally:
        store.close()


@pytest.fixture
def database(store_db: Path | str) -> Path | str:
    write_store(store_db)
    return store_db


def _stored(database: Path | str) -> list[tuple[str, str, str, float, int, int]]:
    return [
        (r[0], r[1], r[2], float(r[3]), int(r[4]), int(r[5]))
        for r in rows(
            database,
            "SELECT e.name, v.name, COALESCE(g.name, 'unknown'), r.duration_ms, r.is_outlier,"
            " r.process_id FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
            " JOIN versions v ON v.id = r.version_id"
            " LEFT JOIN user_groups g ON g.id = r.group_id",
        )
    ]


def assert_within_one_percent(got: Box, durations: list[float]) -> None:
    exact = box_of(durations)
    assert got.count == exact.count
    for name in SHOWN:
        assert getattr(got, name) == pytest.approx(getattr(exact, name), rel=WITHIN), name
    # and the box is the one of the binned durations: whiskers and all
    want = box_of(binned(durations))
    assert dataclasses.replace(got, mean=0.0) == dataclasses.replace(want, mean=0.0)


def test_every_quantile_shown_is_within_one_percent(database: Path | str) -> None:
    stored = _stored(database)
    by_endpoint, by_version, by_group, by_cell = durations_by(stored)
    with open_readonly(str(database)) as conn:
        data = ReportData(conn, max_groups=50)
        table = {row.name: row for row in data.endpoints()}
        boxes = data.box_by_endpoint()
        versions = data.boxes_by_version()
        groups = data.boxes_by_group()
        cells = data.boxes_by_group_version()
    assert sorted(boxes) == sorted(ENDPOINTS)
    for endpoint, durations in by_endpoint.items():
        assert_within_one_percent(boxes[endpoint], durations)
        row = table[endpoint]
        assert row.box == boxes[endpoint]
        assert row.hits == len(durations)
        assert row.box is not None
        assert row.box.mean == pytest.approx(sum(durations) / len(durations), rel=1e-9)
        for version, box in versions[endpoint]:
            assert_within_one_percent(box, by_version[(endpoint, version)])
        assert [g for g, _ in groups[endpoint]] == sorted(
            {g for e, g in by_group if e == endpoint},
            key=lambda g: (-box_of(binned(by_group[(endpoint, g)])).median, g),
        )
        for group, box in groups[endpoint]:
            assert_within_one_percent(box, by_group[(endpoint, group)])
            assert box.mean == pytest.approx(
                sum(by_group[(endpoint, group)]) / box.count, rel=WITHIN
            )
            for version, cell in cells[endpoint][group]:
                assert_within_one_percent(cell, by_cell[(endpoint, group, version)])


@pytest.mark.parametrize("days_later", [1, 3, 9])
def test_the_endpoint_table_and_the_versions_count_exactly(
    database: Path | str, days_later: int
) -> None:
    """Hits, outliers and the hits of the last day and week (UTC hours that began in the 24 h
    and 7 days up to ``now``), summed by the database, against every stored request."""
    stored = [
        (r[0], r[1], float(r[2]), int(r[3]))
        for r in rows(
            database,
            "SELECT e.name, v.name, r.started_at, r.is_outlier FROM requests r"
            " JOIN endpoints e ON e.id = r.endpoint_id JOIN versions v ON v.id = r.version_id",
        )
    ]
    now = START + days_later * 86_400 + 1_800
    with open_readonly(str(database)) as conn:
        data = ReportData(conn, now=now)
        table = {row.name: row for row in data.endpoints()}
        versions = {v.name: (v.requests, v.outliers) for v in data.versions()}

    def hour_of(at: float) -> float:
        return at // 3600 * 3600

    for endpoint in ENDPOINTS:
        mine = [r for r in stored if r[0] == endpoint]
        row = table[endpoint]
        assert (row.hits, row.outliers) == (len(mine), sum(r[3] for r in mine))
        assert row.hits_last_day == sum(now - 86_400 <= hour_of(r[2]) <= now for r in mine)
        assert row.hits_last_week == sum(now - 7 * 86_400 <= hour_of(r[2]) <= now for r in mine)
    assert table["wide"].hits_last_week == (0 if days_later == 9 else table["wide"].hits)
    if days_later == 1:  # the last day holds version 2.0's requests, not 1.0's
        assert 0 < table["wide"].hits_last_day < table["wide"].hits
    assert versions == {
        name: (sum(r[1] == name for r in stored), sum(r[3] for r in stored if r[1] == name))
        for name in ("1.0", "2.0")
    }


def test_summary_medians_are_within_one_percent_and_counts_exact(database: Path | str) -> None:
    stored = _stored(database)
    summary = summarize(str(database))
    assert summary.requests == len(stored)
    assert summary.outliers == sum(r[4] for r in stored)
    for endpoint in summary.endpoints:
        exact = box_of([r[3] for r in stored if r[0] == endpoint.name])
        assert endpoint.requests == exact.count
        assert endpoint.median_ms == pytest.approx(exact.median, rel=WITHIN)
        assert endpoint.p90_ms == pytest.approx(exact.p90, rel=WITHIN)
    assert [(v.name, v.requests) for v in summary.versions] == sorted(
        Counter(r[1] for r in stored).items()
    )


def test_the_process_table_counts_every_request(database: Path | str) -> None:
    stored = _stored(database)
    with open_readonly(str(database)) as conn:
        found = {p.id: (p.requests, p.outliers) for p in process_rows(conn)}
    want: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for *_, outlier, process in stored:
        want[process][0] += 1
        want[process][1] += outlier
    assert found == {p: (n, o) for p, (n, o) in want.items()}


def test_version_comparisons_on_binned_data_match_the_exact_verdicts(
    database: Path | str,
) -> None:
    stored = _stored(database)
    with open_readonly(str(database)) as conn:
        changes = {c.endpoint: c for c in ReportData(conn).changes()}
    assert sorted(changes) == sorted(ENDPOINTS)
    for endpoint, change in changes.items():
        before = [r[3] for r in stored if r[:2] == (endpoint, "1.0")]
        after = [r[3] for r in stored if r[:2] == (endpoint, "2.0")]
        (old_low, old_high), (new_low, new_high) = median_interval(before), median_interval(after)
        ratio = box_of(after).median / box_of(before).median
        p = mann_whitney(before, after)
        exact = expected_verdict(ratio, new_low / old_high, new_high / old_low, p, 0.2, 0.01)
        assert change.verdict == exact, (endpoint, change, exact)
        assert change.ratio == pytest.approx(ratio, rel=2.1 * WITHIN)  # two medians, 1 % each
    assert changes["wide"].verdict == "slower"
    assert changes["wide"].p_value < 1e-6


def test_a_store_older_than_the_histograms_is_refused_by_the_reader_and_upgraded_by_the_cli(
    tmp_path: Path,
) -> None:
    """Reading code refuses a schema-3 store, saying what to run; the commands that read a
    store run that migration first, as `flamewatch migrate` does."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for statements in MIGRATIONS[:3]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')")
    conn.commit()
    conn.close()
    with open_readonly(str(path)) as store, pytest.raises(StoreError) as refused:
        ReportData(store).hourly_hits()
    assert "schema version 3" in str(refused.value)
    assert "run `flamewatch migrate" in str(refused.value)
    for command in (["summary"], ["report", "-o", str(tmp_path / "site"), "-q"]):
        result = CliRunner().invoke(main, [*command, "-d", str(path)])
        assert result.exit_code == 0, result.output
    assert [
        tuple(r) for r in rows(path, "SELECT value FROM meta WHERE key = 'schema_version'")
    ] == [("5",)]
