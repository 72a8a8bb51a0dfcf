"""ReportData against plain Python: every number the report shows, recomputed from all rows.

Two kinds of real store: one from the synthetic generator (benchmarks/synthetic_store.py,
small), and one filled by real traffic through two Flask apps running two versions side by
side. The reference computations below read every request with a simple SELECT and share no
code with flamewatch.reports. The report reads latency histograms, so the reference computes
each statistic twice: on the durations as they are (every quantile shown must be within 1 % of
it), and on the durations replaced by the value of their histogram bucket (the report's
numbers must be exactly those: boxes, whiskers, medians' intervals, rank tests).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sqlite3
import sys
import time
from collections import Counter
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from statistics import fmean
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from helpers import durations_by

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.model import Box, Change
from flamewatch.reports.stats_tests import mann_whitney_p, median_ci_ranks, verdict
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.histogram import ALPHA, bucket_of, bucket_value
from flamewatch.sampler.store import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent

# -- the reference: plain Python over every row -------------------------------------------

QUANTILE = {
    "q1": Fraction(1, 4),
    "median": Fraction(1, 2),
    "q3": Fraction(3, 4),
    "p90": Fraction(9, 10),
    "p99": Fraction(99, 100),
}


def nearest_rank(values: list[float], q: Fraction) -> float:
    n = len(values)
    return values[min(max(math.ceil(q * n), 1), n) - 1]


def box_of(values: list[float]) -> Box:
    ordered = sorted(values)
    at = {name: nearest_rank(ordered, q) for name, q in QUANTILE.items()}
    iqr = at["q3"] - at["q1"]
    return Box(
        count=len(ordered),
        mean=fmean(ordered),
        minimum=ordered[0],
        maximum=ordered[-1],
        lower_fence=min(v for v in ordered if v >= at["q1"] - 1.5 * iqr),
        upper_fence=max(v for v in ordered if v <= at["q3"] + 1.5 * iqr),
        **at,
    )


def binned(values: list[float]) -> list[float]:
    """Each duration replaced by its histogram bucket's value."""
    return [bucket_value(bucket_of(v)) for v in values]


def median_interval(values: list[float]) -> tuple[float, float]:
    ordered, n = sorted(values), len(values)
    low = math.floor(n / 2 - 1.96 * math.sqrt(n) / 2)
    high = math.ceil(n / 2 + 1.96 * math.sqrt(n) / 2) + 1
    return ordered[min(max(low, 1), n) - 1], ordered[min(max(high, 1), n) - 1]


def mann_whitney(old: list[float], new: list[float]) -> float:
    """Two-sided p: average ranks, tie-corrected normal approximation, continuity 1/2."""
    pooled = sorted([(v, 0) for v in old] + [(v, 1) for v in new])
    ranks: list[float] = []
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        ranks += [(i + 1 + j) / 2] * (j - i)
        i = j
    n_new, n_old, big = len(new), len(old), len(pooled)
    u = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side) - n_new * (n_new + 1) / 2
    ties = sum(t**3 - t for t in Counter(v for v, _ in pooled).values())
    sigma = math.sqrt(n_new * n_old / 12 * ((big + 1) - ties / (big * (big - 1))))
    z = max(abs(u - n_new * n_old / 2) - 0.5, 0) / sigma
    return min(1.0, math.erfc(z / math.sqrt(2)))  # 2 * (1 - Phi(z)), exact in the tail


def expected_verdict(ratio: float, low: float, high: float, p: float, t: float, a: float) -> str:
    if ratio >= 1 + t and low > 1 and p < a:
        return "slower"
    if ratio <= 1 / (1 + t) and high < 1 and p < a:
        return "faster"
    if 1 / (1 + t) <= low and high <= 1 + t:
        return "unchanged"
    return "uncertain"


def hour_of(started_at: float) -> int:
    return int(started_at // 3600) * 3600


def read_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT e.name, v.name, coalesce(g.name, 'unknown'), r.duration_ms, r.started_at,"
            " r.is_outlier FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
            " JOIN versions v ON v.id = r.version_id LEFT JOIN user_groups g ON g.id = r.group_id"
        ).fetchall()
    finally:
        conn.close()


def read_table(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


#: the histograms' bound on a quantile's relative error (and float noise at a bucket's edge)
WITHIN = ALPHA * (1 + 1e-9)
SHOWN = ("minimum", "q1", "median", "q3", "p90", "p99", "maximum")


def assert_same_box(got: Box | None, values: list[float], *, exact_mean: bool = True) -> None:
    """``got`` is the box of the binned durations (the mean: the exact one where the store
    keeps the sum, else the binned one), and every quantile shown is within 1 % of the exact."""
    assert got is not None
    want = box_of(binned(values))
    assert dataclasses.replace(got, mean=0.0) == dataclasses.replace(want, mean=0.0)
    mean = fmean(values) if exact_mean else want.mean
    assert got.mean == pytest.approx(mean, rel=1e-9)
    exact = box_of(values)
    for name in SHOWN:
        assert getattr(got, name) == pytest.approx(getattr(exact, name), rel=WITHIN), name


def check_report(db: Path, *, now: float, max_groups: int) -> None:
    """Compare every method of ReportData with the reference."""
    rows = read_rows(db)
    by_endpoint, by_version, by_group, by_group_version = durations_by(rows)
    versions = read_table(db, "SELECT first_seen, id, name FROM versions")
    order = [name for _, _, name in sorted(versions)]  # deployment order: first seen

    with open_readonly(str(db)) as conn:
        data = ReportData(conn, now=now, max_groups=max_groups)
        got_endpoints = data.endpoints()
        got_versions = data.versions()
        changes = data.changes()
        hourly = data.hourly_hits()
        boxes = data.box_by_endpoint()
        version_boxes = data.boxes_by_version()
        group_boxes = data.boxes_by_group()
        group_version_boxes = data.boxes_by_group_version()
        outliers = data.outlier_counts()
        leftovers = conn.execute("SELECT name FROM sqlite_temp_master").fetchall()
        assert leftovers == [], "temporary tables must be dropped"
        assert not conn.in_transaction

    # boxes per endpoint and per version, versions in deployment order
    assert list(boxes) == sorted(by_endpoint)
    for endpoint, values in by_endpoint.items():
        assert_same_box(boxes[endpoint], values)
    for endpoint, pairs in version_boxes.items():
        assert [v for v, _ in pairs] == [v for v in order if (endpoint, v) in by_version]
        for version, box in pairs:
            assert_same_box(box, by_version[(endpoint, version)])
    assert sum(len(p) for p in version_boxes.values()) == len(by_version)

    # groups: the max_groups with the most requests, shown slowest median first, then the
    # others together
    for endpoint in by_endpoint:
        busiest = sorted(
            (g for e, g in by_group if e == endpoint),
            key=lambda g: (-len(by_group[(endpoint, g)]), g),
        )
        kept = sorted(
            busiest[:max_groups],
            key=lambda g: (-box_of(binned(by_group[(endpoint, g)])).median, g),
        )
        rest = busiest[max_groups:]
        got = group_boxes[endpoint]
        assert [g for g, _ in got] == kept + (["others"] if rest else [])
        for group, box in got[: len(kept)]:
            assert_same_box(box, by_group[(endpoint, group)], exact_mean=False)
        if rest:
            rest_values = [v for g in rest for v in by_group[(endpoint, g)]]
            assert_same_box(got[-1][1], rest_values, exact_mean=False)
        assert list(group_version_boxes[endpoint]) == kept
        for group in kept:
            pairs = group_version_boxes[endpoint][group]
            want = [v for v in order if (endpoint, group, v) in by_group_version]
            assert [v for v, _ in pairs] == want
            for version, box in pairs:
                values = by_group_version[(endpoint, group, version)]
                assert_same_box(box, values, exact_mean=False)

    # changes: consecutive versions each endpoint ran in, >= 10 requests on both sides
    want_changes = []
    for endpoint in sorted(by_endpoint):
        ran = [v for v in order if (endpoint, v) in by_version]
        for old, new in pairwise(ran):
            before, after = by_version[(endpoint, old)], by_version[(endpoint, new)]
            if min(len(before), len(after)) >= 10:
                want_changes.append((endpoint, old, new))
    assert [(c.endpoint, c.previous, c.version) for c in changes] == want_changes
    for change in changes:  # on binned durations: bucket values, ties within a bucket
        before = binned(by_version[(change.endpoint, change.previous)])
        after = binned(by_version[(change.endpoint, change.version)])
        (old_low, old_high), (new_low, new_high) = median_interval(before), median_interval(after)
        ratio = box_of(after).median / box_of(before).median
        assert (change.count, change.previous_count) == (len(after), len(before))
        assert change.ratio == pytest.approx(ratio, rel=1e-12)
        assert change.ratio_low == pytest.approx(new_low / old_high, rel=1e-12)
        assert change.ratio_high == pytest.approx(new_high / old_low, rel=1e-12)
        assert change.p_value == pytest.approx(mann_whitney(before, after), rel=1e-6, abs=0)
        assert change.verdict == expected_verdict(
            ratio, new_low / old_high, new_high / old_low, change.p_value, 0.2, 0.01
        )

    # versions, endpoints, hits, outliers
    assert [v.name for v in got_versions] == order
    for version in got_versions:
        mine = [r for r in rows if r[1] == version.name]
        assert (version.requests, version.outliers) == (len(mine), sum(r[5] for r in mine))
        assert version.changes == [c for c in changes if c.version == version.name]
    endpoint_table = read_table(db, "SELECT name, monitored, last_accessed FROM endpoints")
    assert [e.name for e in got_endpoints] == sorted(name for name, _, _ in endpoint_table)
    rules = read_table(
        db, "SELECT e.name, r.rule, r.methods FROM rules r JOIN endpoints e ON e.id = r.endpoint_id"
    )
    facts = {name: (bool(monitored), last) for name, monitored, last in endpoint_table}
    for row in got_endpoints:
        mine = [r for r in rows if r[0] == row.name]
        assert row.hits == len(mine)
        # recent: the UTC hours that began in the last day (week), each counted whole
        assert row.hits_last_day == sum(now - 86_400 <= hour_of(r[4]) <= now for r in mine)
        assert row.hits_last_week == sum(now - 7 * 86_400 <= hour_of(r[4]) <= now for r in mine)
        assert row.outliers == sum(r[5] for r in mine)
        assert (row.monitored, row.last_accessed) == facts[row.name]
        assert row.rules == sorted(rule for name, rule, _ in rules if name == row.name)
        assert row.methods == sorted(
            {m for name, _, joined in rules if name == row.name for m in joined.split(",") if m}
        )
        if mine:
            assert_same_box(row.box, by_endpoint[row.name])
        else:
            assert row.box is None
        latest = [c for c in changes if c.endpoint == row.name]
        ran = [v for v in order if (row.name, v) in by_version]
        newest = latest[-1] if latest and latest[-1].version == ran[-1] else None
        assert row.change == newest
    assert outliers == {e: sum(r[5] for r in rows if r[0] == e) for e in sorted(by_endpoint)}
    hours = Counter((r[0], int(r[4] // 3600) * 3600) for r in rows)
    assert [(h.endpoint, h.hour, h.count) for h in hourly] == sorted(
        (e, hour, count) for (e, hour), count in hours.items()
    )


# -- stores -----------------------------------------------------------------------------------


def _generator() -> ModuleType:
    name = "flamewatch_synthetic_store"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "benchmarks" / "synthetic_store.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small synthetic store and its manifest (what was planted in it)."""
    path = tmp_path_factory.mktemp("synthetic") / "store.sqlite3"
    generator = _generator()
    generator.generate(path, requests=5000, endpoints=5, versions=4, users=12, outliers=20, seed=7)
    return path, generator.manifest(path)


def _traffic_app(name: str, db: Path, version: str, work_ms: float, steady_ms: float) -> Flask:
    app = Flask(name)
    app.config["TESTING"] = True

    @app.get("/work")
    def work() -> str:
        time.sleep(work_ms / 1000)
        return "work"

    @app.get("/steady")
    def steady() -> str:
        time.sleep(steady_ms / 1000)
        return "steady"

    @app.get("/never")
    def never() -> str:  # pragma: no cover - never requested
        return "never"

    Flamewatch(
        app,
        database=str(db),
        version=version,
        sampler=False,
        group_by=lambda r: r.headers.get("X-User"),
    )
    return app


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two versions serving side by side (so machine load hits both alike): version "b" takes
    three times as long on /work and 5 % longer on /steady, 200 requests each. (Three times,
    not twice: the scheduling delay a loaded machine adds to every sleep must not pull the
    measured ratio under the test's bound.)"""
    db = tmp_path_factory.mktemp("traffic") / "store.sqlite3"
    old = _traffic_app("old", db, "a", work_ms=3, steady_ms=3)
    new = _traffic_app("new", db, "b", work_ms=9, steady_ms=3.15)
    try:
        old_client, new_client = old.test_client(), new.test_client()
        old_client.get("/steady")  # version "a" is seen first: deployed first
        for i in range(200):
            headers = {"X-User": f"user-{i % 4}"}
            for client in (old_client, new_client):
                client.get("/work", headers=headers)
                client.get("/steady", headers=headers)
    finally:
        for app in (old, new):
            app.extensions["flamewatch"].close()
    return db


def _change(changes: list[Change], endpoint: str) -> Change:
    (change,) = [c for c in changes if c.endpoint == endpoint]
    return change


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_groups", [3, 50], ids=["others-box", "every-group-kept"])
def test_synthetic_store_report_equals_plain_python(
    synthetic: tuple[Path, dict[str, Any]], max_groups: int
) -> None:
    path, manifest = synthetic
    check_report(path, now=manifest["end"], max_groups=max_groups)


def test_planted_regressions_and_improvements_get_their_verdicts(
    synthetic: tuple[Path, dict[str, Any]],
) -> None:
    path, manifest = synthetic
    with open_readonly(str(path)) as conn:
        changes = ReportData(conn).changes()
    for planted in manifest["changes"]:
        (change,) = [
            c
            for c in changes
            if (c.endpoint, c.version, c.previous)
            == (planted["endpoint"], planted["version"], planted["previous"])
        ]
        assert change.verdict == ("slower" if planted["kind"] == "regression" else "faster")
        assert change.ratio == pytest.approx(planted["factor"], rel=0.35)


def test_the_slow_user_is_the_slowest_group_of_its_endpoint(
    synthetic: tuple[Path, dict[str, Any]],
) -> None:
    path, manifest = synthetic
    slow = manifest["slow_user"]
    with open_readonly(str(path)) as conn:
        groups = ReportData(conn).boxes_by_group()
    assert groups[slow["endpoint"]][0][0] == slow["user"]


def test_an_endpoint_never_requested_is_listed_without_a_box(
    synthetic: tuple[Path, dict[str, Any]],
) -> None:
    path, manifest = synthetic
    with open_readonly(str(path)) as conn:
        data = ReportData(conn)
        (idle,) = [e for e in data.endpoints() if e.name == manifest["idle_endpoint"]]
        assert idle.name not in data.box_by_endpoint()
    assert (idle.box, idle.hits, idle.outliers, idle.change) == (None, 0, 0, None)
    assert idle.rules == ["/static/<path:filename>"]


def test_real_traffic_report_equals_plain_python(traffic: Path) -> None:
    check_report(traffic, now=time.time(), max_groups=2)
    with open_readonly(str(traffic)) as conn:
        never = [e for e in ReportData(conn).endpoints() if e.name == "never"]
    assert [(e.box, e.hits, e.change) for e in never] == [(None, 0, None)]


def test_tripling_a_views_time_is_a_confident_regression(traffic: Path) -> None:
    with open_readonly(str(traffic)) as conn:
        change = _change(ReportData(conn).changes(), "work")
    assert (change.previous, change.version, change.count) == ("a", "b", 200)
    assert change.verdict == "slower"
    assert change.p_value < 0.01
    assert 1.5 < change.ratio_low <= change.ratio <= change.ratio_high


def test_a_small_change_is_never_called_slower(traffic: Path) -> None:
    with open_readonly(str(traffic)) as conn:
        data = ReportData(conn)
        change = _change(data.changes(), "steady")
        (row,) = [e for e in data.endpoints() if e.name == "steady"]
    assert change.verdict in ("unchanged", "uncertain")
    assert row.change == change


def test_an_empty_store_has_no_boxes_and_no_changes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "empty.sqlite3")
    store.open()
    store.close()
    with open_readonly(str(tmp_path / "empty.sqlite3")) as conn:
        data = ReportData(conn)
        assert data.endpoints() == []
        assert data.versions() == []
        assert data.changes() == []
        assert data.hourly_hits() == []
        assert data.box_by_endpoint() == {}
        assert data.boxes_by_version() == {}
        assert data.boxes_by_group() == {}
        assert data.boxes_by_group_version() == {}
        assert data.outlier_counts() == {}


# -- the statistics on their own --------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 11, 100, 2500, 9999, 10_000], ids=lambda n: f"n={n}")
def test_median_interval_ranks_are_the_order_statistic_formula(n: int) -> None:
    low = math.floor(n / 2 - 1.96 * math.sqrt(n) / 2)
    high = math.ceil(n / 2 + 1.96 * math.sqrt(n) / 2) + 1
    assert median_ci_ranks(n) == (min(max(low, 1), n), min(max(high, 1), n))


def test_mann_whitney_matches_the_textbook_example() -> None:
    # no overlap between 1..5 and 6..10: U = 0, z = 2.507, p = 0.0122 (normal approximation
    # with continuity correction; scipy.stats.mannwhitneyu(method="asymptotic") agrees)
    rank_sum_new = sum(range(6, 11))
    assert mann_whitney_p(5, 5, rank_sum_new, 0) == pytest.approx(0.012186, abs=1e-6)
    assert mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(0.012186, abs=1e-6)


@pytest.mark.parametrize(
    ("old", "new", "scipy_p"),
    [
        (
            [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 8.0],
            [2.0, 5.0, 6.0, 7.0, 7.0, 9.0],
            0.11516904815928139,
        ),
        ([4.0] * 6, [4.0] * 5 + [4.5], 0.40465676192728617),
        (
            [float(i % 7) for i in range(40)],
            [float(i % 9) + 0.5 for i in range(30)],
            0.04253562512887711,
        ),
    ],
    ids=["ties-across-samples", "nearly-all-tied", "many-ties"],
)
def test_mann_whitney_with_ties_matches_scipy(
    old: list[float], new: list[float], scipy_p: float
) -> None:
    # reference values: scipy 1.x, mannwhitneyu(new, old, "two-sided", method="asymptotic")
    assert mann_whitney(old, new) == pytest.approx(scipy_p, rel=1e-9)


@pytest.mark.parametrize(
    ("ratio", "low", "high", "p", "want"),
    [
        (2.0, 1.6, 2.5, 1e-6, "slower"),
        (0.5, 0.4, 0.6, 1e-6, "faster"),
        (1.05, 0.98, 1.1, 0.03, "unchanged"),
        (1.5, 0.9, 2.4, 0.02, "uncertain"),
        (1.5, 1.1, 2.4, 0.02, "uncertain"),
        (1.1, 1.05, 1.3, 1e-9, "uncertain"),
    ],
    ids=[
        "large-and-confident-is-slower",
        "large-and-confident-is-faster",
        "interval-inside-threshold-is-unchanged",
        "interval-across-one-is-uncertain",
        "not-significant-is-uncertain",
        "significant-but-small-is-not-slower",
    ],
)
def test_verdict(ratio: float, low: float, high: float, p: float, want: str) -> None:
    assert verdict(ratio, low, high, p, 0.2, 0.01) == want
    assert expected_verdict(ratio, low, high, p, 0.2, 0.01) == want
