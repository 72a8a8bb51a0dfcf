"""Aggregated profiles and differential flamegraphs, from real traffic through real apps.

The history (:mod:`flame_history`) has one endpoint slower because one function is, one slower
for one user only, one faster, two unchanged; it is made twice with different request orders,
and each time the report must flag exactly those changes and name the function behind each.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flame_history import EXPECTED, make_flame_history
from helpers import HOSTILE_USER, rows
from playwright.sync_api import Browser
from test_browser import _visit, browser  # noqa: F401 - the module's Chromium fixture

from flamewatch.reports.aggregate import ReportData
from flamewatch.reports.findings import find_changes
from flamewatch.reports.flames import FlameReport
from flamewatch.reports.site import endpoint_page, write_site
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import ProcessInfo, ProfileStack, RequestRecord, SQLiteStore


@pytest.fixture(scope="module", params=[0, 1], ids=["order-0", "order-1"])
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp(f"flames-{request.param}")
    database = tmp / "store.sqlite3"
    make_flame_history(database, tmp, seed=request.param)
    return database


@pytest.fixture(scope="module")
def site(history: Path) -> Path:
    return write_site(str(history), history.parent / "site").parent


def _findings(database: Path) -> dict[tuple[str, str, str, str | None], list[list[str]]]:
    """(endpoint, version, verdict, group) -> the finding's call paths, from the view down."""
    with open_readonly(str(database)) as conn:
        return {
            (f.endpoint, f.version, f.verdict, f.group): [p.names for p in f.paths]
            for f in find_changes(conn, FlameReport(conn, ReportData(conn)))
        }


def test_report_flags_exactly_the_changes_and_names_each_function(history: Path) -> None:
    found = _findings(history)
    assert set(found) == set(EXPECTED)  # nothing unchanged is flagged
    for key, function in EXPECTED.items():
        assert found[key][0] == [key[0], function], (key, found[key])


def test_every_request_is_folded_and_stacks_stay_few(history: Path) -> None:
    stored = rows(
        history,
        "SELECT e.name AS endpoint, p.group_name AS grp, count(*) AS stacks,"
        " sum(p.samples) AS samples, sum(p.time_ms) AS ms FROM profile_stacks p"
        " JOIN endpoints e ON e.id = p.endpoint_id GROUP BY e.name, p.group_name",
    )
    by_key = {(r["endpoint"], r["grp"]): r for r in stored}
    for endpoint in ("index", "item", "feed", "orders", "search"):
        for user in ("alice", "bob", "carol", "dave"):
            row = by_key[(endpoint, user)]
            assert row["samples"] > 0
            assert row["stacks"] <= 30  # distinct stacks, not requests
    # sampled time estimates the measured time of the requests (a 1 ms interval; each sample
    # stands for the gap before it, so the estimate errs both ways)
    (measured,) = rows(history, "SELECT sum(duration_ms) AS ms FROM requests")
    sampled = sum(r["ms"] for r in stored)
    assert 0.75 * measured["ms"] < sampled < 1.25 * measured["ms"]


def test_pages_say_what_changed_for_whom_and_why(site: Path) -> None:
    versions = site / "versions.html"
    text = versions.read_text()
    code = r"<code[^>]*>{}</code>"
    feed = code.format("feed") + " → " + code.format("render_feed")
    assert re.search(feed + r" \+[\d.]+ ms per request \([\d.]+ → [\d.]+ ms; \d+% → \d+% of", text)
    assert re.search(r"only for carol \(the others \u00d7[\d.]+\)", text)
    assert re.search(code.format("apply_discounts"), text)
    assert re.search(code.format("rank_results") + " \u2212", text)
    assert text.count('<section class="finding ') == len(EXPECTED)
    feed_page = (site / endpoint_page("feed")).read_text()
    assert "What changed, and why" in feed_page
    assert "Where the time goes, per version" in feed_page
    assert "What changed, and why" not in (site / endpoint_page("index")).read_text()


def test_each_version_profile_is_exported(site: Path, speedscope_schema: dict[str, Any]) -> None:
    page = site / endpoint_page("feed")
    links = re.findall(r'href="([^"]+\.(?:speedscope\.json|collapsed\.txt))"', page.read_text())
    assert len(links) == 6  # three versions, two formats
    validator = jsonschema.Draft7Validator(speedscope_schema)
    for link in links:
        path = page.parent / link
        if link.endswith(".json"):
            document = json.loads(path.read_text())
            validator.validate(document)
            names = {frame["name"] for frame in document["shared"]["frames"]}
            assert {"feed", "render_feed", "load_page"} <= names
        else:
            lines = path.read_text().splitlines()
            assert lines
            assert all(re.fullmatch(r"[^;]+(;[^;]+)* \d+", line) for line in lines)
            assert any(";render_feed (flame_history.py:" in line for line in lines)


def test_flamegraphs_render_in_a_browser(browser: Browser, site: Path) -> None:  # noqa: F811
    for path in (site / "versions.html", site / endpoint_page("feed")):
        page, problems, _ = _visit(browser, path.as_uri())
        try:
            icicles = page.locator("[data-figure^='flame-'], [data-figure^='diff-']")
            assert icicles.count() >= 1
            for i in range(icicles.count()):
                icicles.nth(i).locator("svg.main-svg .iciclelayer").first.wait_for(timeout=15_000)
            labels = page.eval_on_selector_all(
                ".iciclelayer text", "els => els.map(e => e.textContent)"
            )
        finally:
            page.close()
        assert not problems, problems
        assert any("render_feed" in label for label in labels), labels


HOSTILE_FUNCTION = "<img src=x onerror=alert('function')>"
HOSTILE_FILE = "</script><script>alert('file')</script>.py"


def test_hostile_function_and_file_names_are_escaped(tmp_path: Path) -> None:
    database = tmp_path / "store.sqlite3"
    store = SQLiteStore(database)
    store.open()
    try:
        for version, slow_ms in (("v1", 2.0), ("v2", 12.0)):
            process = store.register_process(ProcessInfo("h", 1, version, "config", 0.0, "t"))
            started = time.time()
            store.write_requests(
                process,
                [
                    RequestRecord(
                        "ep",
                        "/",
                        "GET",
                        200,
                        started,
                        3.0 + slow_ms + i % 3 / 10,
                        HOSTILE_USER,
                        None,
                        False,
                        None,
                    )
                    for i in range(40)
                ],
            )
            entry = ("entry", HOSTILE_FILE, 1)
            store.write_profiles(
                process,
                [
                    ProfileStack("ep", HOSTILE_USER, (entry,), 40, 120.0),
                    ProfileStack(
                        "ep",
                        HOSTILE_USER,
                        (entry, (HOSTILE_FUNCTION, HOSTILE_FILE, 7)),
                        40,
                        40 * slow_ms,
                    ),
                ],
            )
    finally:
        store.close()
    assert _findings(database) == {("ep", "v2", "slower", None): [["entry", HOSTILE_FUNCTION]]}
    site = write_site(str(database), tmp_path / "site").parent
    pages = [site / "versions.html", site / endpoint_page("ep")]
    for page in pages:
        text = page.read_text()
        assert "&lt;img src=x onerror=alert(&#39;function&#39;)&gt;" in text
        for hostile in (HOSTILE_FUNCTION, HOSTILE_FILE, HOSTILE_USER, "<script>alert("):
            assert hostile not in text, (page, hostile)
    for export in site.glob("endpoints/*/*.speedscope.json"):
        names = {f["name"] for f in json.loads(export.read_text())["shared"]["frames"]}
        assert HOSTILE_FUNCTION in names  # data files keep the name as it is
