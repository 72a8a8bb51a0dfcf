"""The findings on a deploy history made by real traffic through real apps, on both backends.

One test per defect the findings had (issue: "what got slower, for whom, since when, in which
code -- said right, and as data"), each on the history of :mod:`findings_history`:

1. a user's finding restated an endpoint-wide change, against a version several back;
2. the culprit named was the helper every endpoint calls, not the code that changed;
3. a change that started in a version with few requests was dated to the next version;
4. a view that calls one function drew as one box, its words "100 % -> 100 %";
5. a change inside a version (the data grew) was never found.

Then ``flamewatch changes`` (text, ``--json`` against docs/changes.schema.json, ``--since``) and
the findings' texts as Chromium shows them on the built site.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from findings_history import (
    EXPECTED,
    PATHS,
    make_deploy_history,
    make_growth_history,
    requests_of,
)
from helpers import Database, chromium
from pgserver import PostgresServer
from playwright.sync_api import Browser

from flamewatch.reports.cli import main
from flamewatch.reports.finding_words import describe
from flamewatch.reports.findings import Finding, read_findings
from flamewatch.reports.site import endpoint_page, write_site

SCHEMA = Path(__file__).parents[1] / "docs" / "changes.schema.json"


def _store(
    request: pytest.FixtureRequest, tmp: Path
) -> Iterator[tuple[Database, PostgresServer | None]]:
    if request.param == "sqlite":
        yield tmp / "store.sqlite3", None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.database()
    yield url, server
    server.drop(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deploy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    tmp = tmp_path_factory.mktemp(f"deploy-{request.param}")
    for database, _ in _store(request, tmp):
        make_deploy_history(database, tmp)
        yield database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def growth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    tmp = tmp_path_factory.mktemp(f"growth-{request.param}")
    for database, _ in _store(request, tmp):
        make_growth_history(database, tmp)
        yield database


def _by_key(found: list[Finding]) -> dict[tuple[str, str, str, str | None], Finding]:
    keyed = {(f.endpoint, f.version, f.verdict, f.group): f for f in found}
    assert len(keyed) == len(found), found
    return keyed


@pytest.fixture(scope="module")
def findings(deploy: Database) -> dict[tuple[str, str, str, str | None], Finding]:
    return _by_key(read_findings(str(deploy)))


def test_1_a_group_finding_is_a_group_that_changed_differently(
    findings: dict[tuple[str, str, str, str | None], Finding],
) -> None:
    # exactly the planted changes: checkout's and search's once, for all users, never again
    # for a user whose previous version lies several back; orders' for u4 alone
    assert set(findings) == EXPECTED
    orders = findings[("orders", "v5", "slower", "u4")]
    assert orders.against == "v4"  # versions next to each other, not one several back
    assert orders.rest_ratio is not None
    assert 0.8 < orders.rest_ratio < 1.25
    assert not orders.others_changed
    for endpoint, version in (("checkout", "v4"), ("search", "v3")):
        (f,) = [f for f in findings.values() if f.endpoint == endpoint]
        assert (f.version, f.against, f.group) == (version, f"v{int(version[1]) - 1}", None)


def test_2_the_culprit_is_the_changed_code_from_the_view_down(
    findings: dict[tuple[str, str, str, str | None], Finding],
) -> None:
    for (endpoint, *_), f in findings.items():
        top = f.paths[0]
        assert top.names == PATHS[endpoint], (endpoint, [p.names for p in f.paths])
        # the shared leaf is named at the end of its caller's path, never on its own
        assert all(p.names[0] == endpoint for p in f.paths)
    checkout = findings[("checkout", "v4", "slower", None)].paths[0]
    assert checkout.growth_ms > 4.0  # 2 -> 9 ms in apply_coupons' query
    search = findings[("search", "v3", "faster", None)].paths[0]
    assert search.growth_ms < -5.0  # 10 -> 2 ms


def test_3_a_change_is_dated_to_the_version_with_few_requests_where_it_started(
    findings: dict[tuple[str, str, str, str | None], Finding],
) -> None:
    f = findings[("orders", "v5", "slower", "u4")]
    assert f.confirmed_in == "v6"
    assert f.start is not None
    assert f.start.version == "v5"
    assert f.start.requests == requests_of("orders", "v5", "u4") == 8
    assert f.start.ratio > 1.5
    (headline, *_) = describe(f)
    assert re.search(
        r"orders is slower from v5 \(8 requests, \u00d7[\d.]+, (not )?significant alone\),"
        r" confirmed in v6, against v4, only for u4",
        headline,
    ), headline


def test_4_a_single_chain_profile_is_drawn_whole_and_said_in_ms(
    findings: dict[tuple[str, str, str, str | None], Finding], deploy: Database, tmp_path: Path
) -> None:
    price = findings[("price", "v6", "slower", None)]
    path = price.paths[0]
    assert path.names == ["price", "load_price"]
    assert path.growth_ms > 4.0  # 3 -> 10 ms (a loaded machine oversleeps both alike)
    assert not path.shares_mean_something
    words = describe(price)[1]
    assert re.fullmatch(
        r"\s+price \u2192 load_price \+[\d.]+ ms per request \([\d.]+ \u2192 [\d.]+ ms\)", words
    ), words
    site = write_site(str(deploy), tmp_path / "site").parent
    page = (site / endpoint_page("price")).read_text()
    chain = [
        re.sub(r"<[^>]+>", "", item)
        for item in re.findall(r'<li class="path">(.*?)</li>', page, re.S)
        if ">load_price</code>" in item
    ]
    assert chain  # the finding's path, on the endpoint page
    assert all("%" not in item for item in chain), chain  # no "100 % -> 100 % of the time"
    figures = {
        chart_id: json.loads(figure)
        for chart_id, figure in re.findall(
            r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S
        )
    }
    icicles = [f for chart_id, f in figures.items() if chart_id.startswith(("flame-", "diff-"))]
    assert icicles, sorted(figures)
    for figure in icicles:  # every icicle of the chain: the view above the function it calls
        labels = figure["data"][0]["labels"]
        assert {"price", "load_price"} <= set(labels), labels


def test_5_a_change_inside_a_version_is_found_and_dated(growth: Database, tmp_path: Path) -> None:
    found = read_findings(str(growth))
    assert [(f.endpoint, f.kind, f.verdict, f.version) for f in found] == [
        ("blog_index", "time", "slower", "1.0")
    ]
    (f,) = found
    assert f.since is not None
    assert f.ratio > 1.5
    assert f.paths == []
    (headline, reason) = describe(f)
    assert re.match(
        r"blog_index is slower inside 1\.0 since \d{4}-\d\d-\d\d \d\d:00:00 UTC", headline
    )
    assert "per version, not per hour" in reason
    site = write_site(str(growth), tmp_path / "site").parent
    page = (site / endpoint_page("blog_index")).read_text()
    assert page.count('<section class="finding slower" data-kind="time">') == 1
    assert re.search(r"is slower inside 1\.0 since \d{4}-\d\d-\d\d \d\d:00:00", page)
    over_time = json.loads(
        re.search(r'<script type="application/json" id="over-time">(.*?)</script>', page, re.S)[1]
    )
    (mark,) = over_time["layout"]["shapes"]  # the change point on the chart of hourly medians
    assert mark["line"]["dash"] == "dash"
    assert 'data-kind="time"' not in (site / endpoint_page("about")).read_text()


def test_changes_command_prints_json_that_follows_the_schema(deploy: Database) -> None:
    result = CliRunner().invoke(main, ["changes", "-d", str(deploy), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(document)
    keyed = {(d["endpoint"], d["version"], d["verdict"], d["group"]): d for d in document}
    assert set(keyed) == EXPECTED
    for (endpoint, *_), d in keyed.items():
        assert d["functions"][0] == PATHS[endpoint]
        assert len(d["ms_before"]) == len(d["ms_after"]) == len(d["functions"])
        low, high = d["ci"]
        assert low <= d["ratio"] <= high
        assert d["p"] < 0.01
    assert keyed[("orders", "v5", "slower", "u4")]["against"] == "v4"
    assert keyed[("orders", "v5", "slower", "u4")]["started"]["requests"] == 8
    since = CliRunner().invoke(main, ["changes", "-d", str(deploy), "--json", "--since", "v5"])
    assert {(d["endpoint"], d["version"]) for d in json.loads(since.output)} == {
        ("orders", "v5"),
        ("price", "v6"),
    }


def test_changes_command_says_it_in_words_and_refuses_an_unknown_version(deploy: Database) -> None:
    result = CliRunner().invoke(main, ["changes", "-d", str(deploy)])
    assert result.exit_code == 0, result.output
    assert "checkout is slower in v4 against v3, for all users" in result.output
    assert "checkout \u2192 apply_coupons \u2192 query +" in result.output
    bad = CliRunner().invoke(main, ["changes", "-d", str(deploy), "--since", "v9"])
    assert bad.exit_code != 0
    assert "--since: 'v9' is not a version of the store" in bad.output


def test_two_versions_compared_directly(deploy: Database) -> None:
    """What ``flamewatch check`` asks: one version against an older one, nothing between."""
    found = read_findings(str(deploy), version="v6", against="v4")  # v5 skipped
    assert {(f.endpoint, f.verdict, f.group) for f in found} == {
        ("orders", "slower", "u4"),  # from v5 on: seen against v4
        ("price", "slower", None),
    }
    assert all((f.version, f.against) == ("v6", "v4") for f in found)
    assert all(f.start is None for f in found)  # nothing between the two: no start elsewhere
    found = read_findings(str(deploy), version="v4", against="v2")
    assert {(f.endpoint, f.verdict, f.group) for f in found} == {
        ("checkout", "slower", None),
        ("search", "faster", None),
    }
    with pytest.raises(ValueError, match="not deployed before"):
        read_findings(str(deploy), version="v2", against="v6")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def test_findings_read_right_in_chromium(
    browser: Browser, deploy: Database, tmp_path: Path
) -> None:
    site = write_site(str(deploy), tmp_path / "site").parent
    page = browser.new_page()
    try:
        page.goto((site / "versions.html").as_uri(), wait_until="load")
        headlines = page.locator("section.finding .headline").all_inner_texts()
        paths = page.locator("section.finding li.path").all_inner_texts()
        page.goto((site / endpoint_page("orders")).as_uri(), wait_until="load")
        orders = page.locator("section.finding .headline").all_inner_texts()
    finally:
        page.close()
    assert len(headlines) == len(EXPECTED), headlines
    text = "\n".join(headlines)
    assert "checkout is slower in v4 against v3, for all users: \u00d7" in text
    assert "search is faster in v3 against v2, for all users: \u00d7" in text
    assert "price is slower in v6 against v5, for all users: \u00d7" in text
    assert re.search(
        r"orders is slower from v5 \(8 requests, .*\), confirmed in v6, against v4, only for u4",
        text,
    )
    assert not re.search(r"only for u(?!4)", text)
    assert any(p.startswith("checkout \u2192 apply_coupons \u2192 query +") for p in paths), paths
    assert any(p.startswith("price \u2192 load_price +") and "%" not in p for p in paths), paths
    assert len(orders) == 1
    assert "only for u4" in orders[0]
