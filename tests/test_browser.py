"""The report site in a real headless Chromium, opened from file:// with no server.

Debian's ``chromium`` driven by Playwright's Python package (``executable_path``); the README's
test command installs both. Every page loads with no console or page error and no request
leaving the site, every plotly chart renders to SVG, every link and download resolves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from helpers import chromium, regression_history
from playwright.sync_api import Browser, Page

from flamewatch.reports.site import write_site

LOCAL_SCHEMES = ("file", "data", "blob", "about")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = regression_history(tmp_path_factory, "browser")
    return write_site(str(database), database.parent / "site").parent


def _visit(browser: Browser, url: str) -> tuple[Page, list[str], list[str]]:
    page = browser.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, problems, requests


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_every_page_loads_cleanly_and_stays_on_the_site(browser: Browser, site: Path) -> None:
    pages = _pages(site)
    assert len(pages) >= 12
    for path in pages:
        page, problems, requests = _visit(browser, path.as_uri())
        try:
            charts = page.locator("[data-figure]")
            for i in range(charts.count()):
                charts.nth(i).locator("svg.main-svg").first.wait_for(timeout=15_000)
            if path.name == "profile.html":
                page.wait_for_selector("#app *", timeout=15_000)  # pyinstrument's viewer drew
        finally:
            page.close()
        assert not problems, (path, problems)
        leaving = [u for u in requests if urlsplit(u).scheme not in LOCAL_SCHEMES]
        assert not leaving, (path, leaving)


def test_every_link_and_download_resolves(browser: Browser, site: Path) -> None:
    checked = 0
    for path in _pages(site):
        if path.name == "profile.html":
            continue
        page, _, _ = _visit(browser, path.as_uri())
        try:
            targets = page.eval_on_selector_all(
                "a[href], iframe[src], script[src], link[href]",
                "els => els.map(e => e.href || e.src)",
            )
            anchors = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
        finally:
            page.close()
        for target in targets:
            parts = urlsplit(target)
            assert parts.scheme == "file", (path, target)
            resolved = Path(unquote(parts.path))
            assert resolved.is_file(), (path, target)
            if parts.fragment and resolved == path:
                assert parts.fragment in anchors, (path, target)
            checked += 1
    assert checked > 50


def test_charts_have_hover_and_legend(browser: Browser, site: Path) -> None:
    page, problems, _ = _visit(browser, (site / "utilization.html").as_uri())
    try:
        page.locator("[data-figure='hits-per-day'] svg.main-svg").first.wait_for()
        legend = page.locator("[data-figure='hits-per-day'] .legend .traces")
        assert legend.count() >= 3  # one entry per endpoint, click to filter
        legend.first.click()
        assert page.locator("[data-figure='hour-heatmap'] .heatmaplayer").count() == 1
    finally:
        page.close()
    assert not problems


def test_tables_sort_by_clicking_a_column(browser: Browser, site: Path) -> None:
    page, problems, _ = _visit(browser, (site / "index.html").as_uri())
    try:

        def hits() -> list[int]:
            cells = page.locator("#endpoints tbody tr td:nth-child(4)").all_inner_texts()
            return [int(c) for c in cells]

        header = page.locator("#endpoints thead th", has_text="hits").first
        header.click()
        ascending = hits()
        header.click()
        assert hits() == sorted(ascending, reverse=True)
        assert ascending == sorted(ascending)
    finally:
        page.close()
    assert not problems


def test_hostile_values_do_not_run(browser: Browser, site: Path) -> None:
    dialogs: list[str] = []
    pages = [site / "index.html", *site.glob("outliers/*.html"), *site.glob("endpoints/*.html")]
    for path in pages:
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri(), wait_until="load")
        page.close()
    assert not dialogs
