"""A process killed with SIGKILL while it writes leaves the raw rows and the latency histograms
agreeing: the writer adds a batch's counts in the batch's own transaction, and the backfill
moves its watermark in the transaction of the counts it adds, so a kill at any moment loses
a whole batch or nothing of it.

Real processes, killed at whatever point they have reached (between batches or inside one),
on both backends; the check recomputes every histogram from the stored rows, and schema 5's
coarser tables (per version, group, day and hour) from those.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from helpers import Database, rows
from histogram_check import assert_histograms_match_rows, coarse_tables
from test_backfill import V3_ROWS, V3_STORE, _v3_postgres, invoke

from flamewatch.sampler.store.backfill import HISTOGRAM_TABLES, backfill_state
from flamewatch.sampler.store.connection import open_connection

WRITER = textwrap.dedent(
    """
    import itertools, sys
    from flask import Flask
    from flamewatch.flask_plugin import Flamewatch

    app = Flask("crash")

    @app.get("/items/<int:i>")
    def item(i):
        return str(i)

    @app.get("/missing")
    def missing():
        return "no", 404

    Flamewatch(app, database=sys.argv[1], version=sys.argv[2], flush_interval=0.01,
               group_by=lambda request: request.args.get("user"))
    client = app.test_client()
    for i in itertools.count():
        client.get(f"/items/{i}?user=u{i % 7}")
        if i % 5 == 0:
            client.get("/missing")
    """
)

BACKFILL = textwrap.dedent(
    """
    import sys, time
    from flamewatch.sampler.store.backfill import backfill_histograms
    from flamewatch.sampler.store.connection import open_connection

    conn = open_connection(sys.argv[1], readonly=False)
    backfill_histograms(conn, batch_rows=40, progress=lambda rows: time.sleep(0.01))
    """
)


def _count(database: Database) -> int:
    return int(rows(database, "SELECT count(*) FROM requests")[0][0])


def _run_and_kill(command: list[str], log: Path, ready: Callable[[], bool], what: str) -> None:
    """Start ``command`` and SIGKILL it as soon as ``ready()`` holds (polled); fail if it
    ends first or never gets there."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{what}: not reached in 60 s"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_writers_killed_mid_load_leave_rows_and_histograms_agreeing(
    store_db: Database, tmp_path: Path
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for round_, version in enumerate(["1.0", "1.0", "2.0"]):
        before = _count(store_db) if round_ else 0
        _run_and_kill(
            [sys.executable, str(script), str(store_db), version],
            tmp_path / "writer.log",
            lambda target=before + 400: _safe_count(store_db) > target,
            "400 rows written",
        )
    stored = _count(store_db)
    assert stored > 1200
    found = assert_histograms_match_rows(store_db)  # schema 5's tables: the grouped sums
    coarse = coarse_tables(store_db)
    # the sum of the histograms' counts is the number of stored rows, per endpoint and version
    per_pair = {
        (e, v): n
        for e, v, n in rows(
            store_db,
            "SELECT endpoint_id, version_id, count(*) FROM requests"
            " GROUP BY endpoint_id, version_id",
        )
    }
    for table in (found.latency, found.hourly, coarse.daily):
        summed: dict[tuple[int, int], int] = {}
        for (e, v, _, _), n in table.items():
            summed[(e, v)] = summed.get((e, v), 0) + n
        assert summed == per_pair
    for three in (coarse.versions, coarse.groups):
        summed = {}
        for (e, v, _), n in three.items():
            summed[(e, v)] = summed.get((e, v), 0) + n
        assert summed == per_pair
    assert sum(int(hits) for hits, _, _ in found.traffic.values()) == stored
    assert sum(int(hits) for hits, _, _ in coarse.daily_traffic.values()) == stored
    assert sum(hits for hits, _ in coarse.hits.values()) == stored
    assert len(per_pair) == 4  # two endpoints, two versions


def _safe_count(database: Database) -> int:
    """The rows so far, or 0 while the first process has not created the store yet."""
    try:
        return _count(database)
    except Exception:
        return 0


def test_a_backfill_killed_mid_way_resumes_with_flamewatch_migrate(
    store_db: Database, tmp_path: Path
) -> None:
    if isinstance(store_db, Path):
        shutil.copyfile(V3_STORE, store_db)
    else:
        _v3_postgres(store_db)
    invoke("migrate", "-d", str(store_db), "--histogram-groups", "50", "--quiet")
    # the migrate above folded everything: mark the rows pending again, histograms emptied
    conn = open_connection(str(store_db), readonly=False)
    try:
        with conn.transaction():
            for table in HISTOGRAM_TABLES:  # schema 5's coarser tables too
                conn.execute(f"DELETE FROM {table}")
            conn.execute("UPDATE meta SET value = '0' WHERE key = 'histograms_backfilled'")
    finally:
        conn.close()
    script = tmp_path / "backfill.py"
    script.write_text(BACKFILL)

    def midway() -> bool:
        try:
            conn = open_connection(str(store_db))
            try:
                return 400 <= backfill_state(conn).done < V3_ROWS - 400
            finally:
                conn.close()
        except Exception:
            return False

    command = [sys.executable, str(script), str(store_db)]
    _run_and_kill(command, tmp_path / "backfill.log", midway, "a backfill half done")
    conn = open_connection(str(store_db))
    try:
        left = backfill_state(conn)
    finally:
        conn.close()
    assert left.pending
    result = invoke("migrate", "-d", str(store_db), "--quiet")
    assert result.output == (
        f"schema version 5: already current\nlatency histograms built from"
        f" {V3_ROWS - left.done} stored requests\n"
    )
    assert_histograms_match_rows(store_db)
