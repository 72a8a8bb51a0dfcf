"""Folding samples into aggregated profiles, storing them, and the schema migration to v3."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import CodeType

import pytest
from flask import Flask
from helpers import rows

from flamewatch.flask_plugin import ConfigError, Flamewatch
from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.flames import FlameReport
from flamewatch.reports.site import write_site
from flamewatch.reports.summary import open_readonly
from flamewatch.reports.transfer import build_histograms, migrate_store
from flamewatch.sampler.folding import NO_GROUP, OTHER_GROUP, StackFolder, frame_key
from flamewatch.sampler.inflight import Sample, Stack
from flamewatch.sampler.store import (
    ProcessInfo,
    ProfileStack,
    RequestRecord,
    SQLiteStore,
    make_store,
    resolve_database,
)
from flamewatch.sampler.store.schema import MIGRATIONS, SCHEMA_VERSION
from flamewatch.sampler.store.sqlite import migrate

MS = 1_000_000


def entry() -> None:
    pass


def view() -> None:
    pass


def helper() -> None:
    pass


def other() -> None:
    pass


def server() -> None:
    pass


E, V, H, OTHER, S = (f.__code__ for f in (entry, view, helper, other, server))


def stack(*codes: CodeType) -> Stack:
    return tuple((code, i + 1) for i, code in enumerate(codes))


def folded(folder: StackFolder) -> dict[tuple[str, str, tuple[str, ...]], tuple[int, float]]:
    return {
        (s.endpoint, s.group, tuple(name for name, _, _ in s.frames)): (s.samples, s.time_ms)
        for s in folder.drain()
    }


def test_a_sample_weighs_the_time_since_the_one_before_and_outliers_are_not_overweighted() -> None:
    folder = StackFolder(entry_code=E)
    slow = stack(S, E, V, H)  # the server's frame above the entry is cut off
    samples: list[Sample] = [(10 * MS, 10 * MS, slow), (20 * MS, 10 * MS, slow)]
    samples += [(20 * MS + i * MS, MS, slow) for i in range(1, 31)]  # past the threshold: 1 ms
    folder.fold("ep", None, samples, t0=0)
    assert folded(folder) == {("ep", NO_GROUP, ("entry", "view", "helper")): (32, 50.0)}
    assert folder.drain() == []  # drained


def test_a_late_sample_stands_for_the_whole_gap_up_to_a_cap() -> None:
    folder = StackFolder(max_weight_ns=40 * MS)
    folder.fold("ep", "g", [(25 * MS, 10 * MS, stack(E, V)), (95 * MS, 10 * MS, stack(E))], t0=0)
    assert folded(folder) == {
        ("ep", "g", ("entry", "view")): (1, 25.0),
        ("ep", "g", ("entry",)): (1, 40.0),
    }


def test_frames_are_functions_not_lines() -> None:
    folder = StackFolder()
    at_line_5 = ((E, 5), (V, 5))
    at_line_9 = ((E, 9), (V, 9))
    folder.fold("ep", None, [(10 * MS, 10 * MS, at_line_5), (20 * MS, 10 * MS, at_line_9)], 0)
    assert folded(folder) == {("ep", NO_GROUP, ("entry", "view")): (2, 20.0)}
    assert frame_key(V) == ("view", __file__, V.co_firstlineno)


def test_past_the_cap_a_new_stack_goes_to_its_deepest_kept_ancestor() -> None:
    folder = StackFolder(max_stacks=2)
    folder.fold("ep", None, [(10 * MS, 10 * MS, stack(E, V))], 0)
    folder.fold("ep", None, [(10 * MS, 10 * MS, stack(E, OTHER))], 0)
    folder.fold("ep", None, [(10 * MS, 10 * MS, stack(E, V, H))], 0)  # full: -> (E, V)
    folder.fold("ep", None, [(10 * MS, 10 * MS, stack(S, H))], 0)  # no ancestor: its root
    assert folded(folder) == {
        ("ep", NO_GROUP, ("entry", "view")): (2, 20.0),
        ("ep", NO_GROUP, ("entry", "other")): (1, 10.0),
        ("ep", NO_GROUP, ("server",)): (1, 10.0),
    }
    assert folder.merged == 2
    # the cap holds for the life of the process, not per drain
    folder.fold("ep", None, [(10 * MS, 10 * MS, stack(E, V, H))], 0)
    assert set(folded(folder)) == {("ep", NO_GROUP, ("entry", "view"))}


def test_groups_past_the_cap_share_one_profile() -> None:
    folder = StackFolder(max_groups=2)
    for group in ("a", "b", "c", "d", None):
        folder.fold("ep", group, [(10 * MS, 10 * MS, stack(E, V))], 0)
    groups = {key[1]: value for key, value in folded(folder).items()}
    assert groups == {"a": (1, 10.0), "b": (1, 10.0), OTHER_GROUP: (2, 20.0), NO_GROUP: (1, 10.0)}


def _process(version: str = "v1") -> ProcessInfo:
    return ProcessInfo("host", 1, version, "config", time.time(), "test")


def test_profiles_add_up_in_the_store(store_db: Path | str) -> None:
    store = make_store(resolve_database(str(store_db), "."))
    store.open()
    try:
        process = store.register_process(_process())
        frames = (("entry", "/app.py", 1), ("view", "/app.py", 5))
        store.write_profiles(process, [ProfileStack("ep", "g", frames, 3, 30.0)])
        store.write_profiles(process, [ProfileStack("ep", "g", frames, 2, 5.0)])
        store.write_profiles(process, [ProfileStack("ep", "h", frames[:1], 1, 1.0)])
    finally:
        store.close()
    stored = rows(
        store_db,
        "SELECT p.group_name, p.samples, p.time_ms, s.frame_ids FROM profile_stacks p"
        " JOIN stacks s ON s.id = p.stack_id ORDER BY p.group_name",
    )
    frame_ids = [f"{r[0]}" for r in rows(store_db, "SELECT id FROM frames ORDER BY id")]
    assert len(frame_ids) == 2
    assert [tuple(r) for r in stored] == [
        ("g", 5, 35.0, ",".join(frame_ids)),
        ("h", 1, 1.0, frame_ids[0]),
    ]


def test_the_report_reads_the_same_profiles_from_either_backend(store_db: Path | str) -> None:
    store = make_store(resolve_database(str(store_db), "."))
    store.open()
    try:
        process = store.register_process(_process())
        store.write_requests(
            process,
            [RequestRecord("ep", "/ep", "GET", 200, time.time(), 10.0, "g", None, False, None)],
        )
        frames = (("entry", "/app.py", 1), ("view", "/app.py", 5), ("slow", "/lib.py", 9))
        store.write_profiles(
            process,
            [
                ProfileStack("ep", "g", frames, 6, 60.0),
                ProfileStack("ep", "g", frames[:2], 4, 40.0),
                ProfileStack("ep", "h", frames[:2], 1, 10.0),
            ],
        )
    finally:
        store.close()
    with open_readonly(str(store_db)) as conn:
        report = FlameReport(conn, ReportData(conn))
        profile = report.profile("ep", "v1")
        names = {f.name for f in report.functions.values()}
    assert profile is not None
    assert (profile.samples, profile.total_ms) == (11, 110.0)
    assert names == {"entry", "view", "slow"}


def test_migration_from_v2_keeps_the_data_and_adds_the_profiles(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    for statements in MIGRATIONS[:2]:  # a store written by the previous release
        for statement in statements:
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')")
    conn.close()
    store = SQLiteStore(db_path)
    store.open()
    try:
        process = store.register_process(_process())
        record = RequestRecord("ep", "/", "GET", 200, time.time(), 3.0, "g", None, False, None)
        store.write_requests(process, [record])
        store.write_profiles(process, [ProfileStack("ep", "g", (("f", "/a.py", 1),), 1, 3.0)])
    finally:
        store.close()
    conn = sqlite3.connect(db_path)
    try:
        assert migrate(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (1,)
        assert conn.execute("SELECT samples FROM profile_stacks").fetchall() == [(1,)]
    finally:
        conn.close()


def test_a_capped_endpoint_is_still_folded_at_the_low_rate(db_path: Path) -> None:
    app = Flask("capped")
    app.config.update(TESTING=True)

    @app.get("/slow")
    def slow() -> str:
        time.sleep(0.01)
        return "ok"

    fw = Flamewatch(app, database=str(db_path), version="v1", sample_interval_ms=2)
    client = app.test_client()
    client.get("/slow")  # starts the agent
    agent = app.extensions["flamewatch"]
    agent.recorder.capped.add("slow")  # as the writer does when the hourly cap is reached
    for _ in range(10):
        client.get("/slow")
    fw.close()
    (row,) = rows(db_path, "SELECT sum(samples) AS n, sum(time_ms) AS ms FROM profile_stacks")
    # the one request sampled for capture holds ~5 samples and ~10 ms: the capped ones count
    assert row["n"] >= 15
    assert row["ms"] >= 50


def test_aggregation_can_be_switched_off(db_path: Path) -> None:
    app = Flask("off")
    app.config.update(TESTING=True)
    app.add_url_rule("/", "index", lambda: (time.sleep(0.005), "ok")[1])
    fw = Flamewatch(app, database=str(db_path), version="v1", aggregate_profiles=False)
    for _ in range(5):
        app.test_client().get("/")
    fw.close()
    assert len(rows(db_path)) == 5
    assert rows(db_path, "SELECT * FROM profile_stacks") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLAMEWATCH_AGGREGATE_MAX_STACKS", 5),
        ("FLAMEWATCH_AGGREGATE_MAX_GROUPS", -1),
        ("FLAMEWATCH_AGGREGATE_FLUSH_INTERVAL", 0),
        ("FLAMEWATCH_AGGREGATE_PROFILES", "maybe"),
    ],
)
def test_bad_aggregation_settings_are_refused(db_path: Path, key: str, value: object) -> None:
    app = Flask("bad")
    app.config.update({key: value, "FLAMEWATCH_DATABASE": str(db_path)})
    with pytest.raises(ConfigError, match=key):
        Flamewatch(app)


def test_the_report_reads_a_store_from_before_the_profiles(db_path: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    for statements in MIGRATIONS[:2]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')")
    conn.execute("INSERT INTO versions VALUES (1, 'v1', 'config', 0, 0)")
    conn.execute("INSERT INTO endpoints (id, name, first_seen, last_seen) VALUES (1, 'ep', 0, 0)")
    conn.execute("INSERT INTO processes VALUES (1, 'h', 1, 1, 'a', 0, 0, 0)")
    conn.execute(
        "INSERT INTO requests (endpoint_id, version_id, process_id, method, status, started_at,"
        " duration_ms) VALUES (1, 1, 1, 'GET', 200, 0, 3.5)"
    )
    conn.close()
    migrate_store(str(db_path))  # what `flamewatch migrate` does first
    build_histograms(str(db_path), quiet=True)
    index = write_site(str(db_path), tmp_path / "site")
    assert (
        "Where the time goes"
        not in (index.parent / "endpoints")
        .joinpath(next(p.name for p in (index.parent / "endpoints").glob("*.html")))
        .read_text()
    )


def test_a_flush_writes_the_folded_stacks_while_the_app_runs(db_path: Path) -> None:
    app = Flask("flushing")
    app.config.update(TESTING=True)
    app.add_url_rule("/", "index", lambda: (time.sleep(0.005), "ok")[1])
    fw = Flamewatch(app, database=str(db_path), version="v1", sample_interval_ms=1)
    client = app.test_client()
    try:
        for _ in range(10):
            client.get("/")
        deadline = time.monotonic() + 10
        # a flush first: on a loaded machine the writer may not have opened the store yet
        while True:
            assert fw.flush(timeout=10)
            if rows(db_path, "SELECT * FROM profile_stacks"):  # the interval is 10 s
                break
            assert time.monotonic() < deadline, "the flush did not write the folded stacks"
            time.sleep(0.02)  # the sampler folds a request at its next round
    finally:
        fw.close()
    (row,) = rows(db_path, "SELECT sum(time_ms) AS ms FROM profile_stacks")
    assert row["ms"] > 25  # ten requests of 5 ms
