"""The report built from a store full of hostile strings, in a real headless Chromium.

Every string a request can bring -- endpoint, rule, user or group, version label, host, params,
headers, body, path, function and file names of profiles, notes -- is set to markup plotly or a
browser would act on (links, bold, line breaks, styles, an ``onerror`` image, a ``</script>``
breakout, ``javascript:`` URLs, entities, quotes, direction overrides, control characters),
written through the store's own write API so it really is in the store. The static site and the
live dashboard are then loaded page by page: no element, link, style or script the payloads
would inject exists (in the HTML or inside plotly's SVG, hover labels included), no dialog
opens, and each payload is shown literally. A second store holds megabyte strings: every page
of its site stays under 2 MB and building it does not hold the payloads in memory.
"""

from __future__ import annotations

import gzip
import random
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from helpers import chromium, shop_app
from playwright.sync_api import Browser, Page
from pyinstrument.session import Session
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.outliers import list_outliers
from flamewatch.reports.site import write_site
from flamewatch.reports.text import visible
from flamewatch.sampler.storable import Limits, storable
from flamewatch.sampler.store import (
    OutlierCapture,
    ProcessInfo,
    ProfileStack,
    RequestRecord,
    RouteInfo,
    SQLiteStore,
)

USER, PASSWORD = "ops", "a test password for the hostile dashboard"
PREFIX = "/flamewatch"
MAX_PAGE_BYTES = 2_000_000

#: payload -> the word that shows it (a text holding the word must hold the payload literally)
PAYLOADS = {
    '<a href="https://evil.example/phish">Click</a>': "Click",
    "<b>bold</b>": "bold",
    "one<br>two": "two",
    '<span style="color:red">x</span>': "color:red",
    "<img src=x onerror=alert(1)>": "onerror",
    "</script><script>alert(1)</script>": "script>alert",
    "javascript:alert(1)": "javascript:",
    "\"double\" 'single' `back`": "double",
    "&lt;b&gt;entity&amp;": "entity",
    "\u202erevo\u202c-bidi": "revo",
    "ctl\x00zq\x07esc\x1b[31m": "zq",
}
LONG = "L" * 5000 + "<b>tail</b>"
#: frame identifiers are split at NUL and \x01: these payloads may name functions and files
FRAME_SAFE = [p for p in PAYLOADS if "\x00" not in p and "\x01" not in p]
VERSIONS = [
    '<a href="https://evil.example/phish">Click</a> v1',
    '<b>bold</b> <span style="color:red">x</span> v2 \u202e',
]
HOST = "<img src=x onerror=alert(1)>-host"
UNCAPPED = Limits(name_chars=10**8, capture_bytes=10**9)


# -- the stores --------------------------------------------------------------------------------


def _session(functions: list[str], files: list[str], started_at: float, seconds: float) -> bytes:
    """A small pyinstrument session whose frames carry the given names, gzip-compressed."""
    root = "MainThread\x00<thread>\x001"
    stacks = [
        [root, f"{function}\x00{file}\x00{line}"]
        for line, (function, file) in enumerate(zip(functions, files, strict=True), 1)
    ]
    session = Session(
        frame_records=[(stack, seconds / len(stacks)) for stack in stacks],
        start_time=started_at,
        duration=seconds,
        min_interval=0.001,
        max_interval=0.01,
        sample_count=len(stacks),
        start_call_stack=[root],
        target_description=functions[0],
        cpu_time=seconds / 2,
        sys_path=["/srv/app"],
        sys_prefixes=["/srv/app/.venv"],
    )
    return gzip.compress(orjson.dumps(session.to_json()))


def _capture(value: str, functions: list[str], started_at: float) -> OutlierCapture:
    """An outlier's capture with ``value`` in every field a request fills."""
    request = {
        "method": "GET",
        "path": f"/{value}",
        "rule": f"/r/{value}",
        "remote_addr": value,
        "host": value,
        "pid": 1,
        "content_type": value,
        "content_length": len(value),
        "query": [[value, value]],
        "form": [[value, value]],
        "json": {value: [value, {"nested": value}]},
        "body": value,
        "headers": [["X-Hostile", value], [value, "v"]],
    }
    return OutlierCapture(
        request=request,
        resources={"process_cpu_percent": 50.0, "cpu_count": 2},
        threshold_stack=[f"{f}\x00{f}.py\x00{i}" for i, f in enumerate(functions, 1)],
        profile=_session(functions, [f"{f}.py" for f in functions], started_at, 0.2),
        sample_count=len(functions),
        note=value,
    )


def _write_store(
    database: Path,
    *,
    endpoints: list[str],
    groups: list[str],
    versions: list[str],
    host: str,
    functions: list[str],
    outlier_values: list[str],
    outlier_group: str | None = None,
    requests_per_group: int = 4,
) -> None:
    """A store written through :class:`SQLiteStore`'s public API: every endpoint requested by
    every group in every version (the first endpoint 3x slower in the last version, with a
    function that grew), aggregated profiles naming ``functions``, and one outlier per value of
    ``outlier_values`` (of the endpoints in turn) carrying that value everywhere (its group too,
    unless ``outlier_group`` is given)."""
    rng = random.Random(14)
    # limits far above the defaults: the report must hold whatever a store holds (one written
    # with other settings, or by an older flamewatch), not only what today's caps let in
    store = SQLiteStore(database, UNCAPPED)
    store.open()
    try:
        started = time.time() - 3600
        for number, version in enumerate(versions):
            slow = 3.0 if number == len(versions) - 1 else 1.0
            process = store.register_process(
                ProcessInfo(host, 1000 + number, version, "config", started, host)
            )
            store.record_routes(
                [RouteInfo(e, f"/r/{e}", ("GET",)) for e in endpoints], lambda _: True, started
            )
            records = [
                RequestRecord(
                    endpoint,
                    f"/r/{endpoint}",
                    "GET",
                    200,
                    started + rng.random(),
                    rng.uniform(8, 12) * (slow if e == 0 else 1.0),
                    group,
                    "127.0.0.1",
                    False,
                    50.0,
                )
                for e, endpoint in enumerate(endpoints)
                for group in groups
                for _ in range(requests_per_group)
            ]
            for i, value in enumerate(outlier_values):
                endpoint = endpoints[i % len(endpoints)]
                records.append(
                    RequestRecord(
                        endpoint,
                        f"/r/{endpoint}",
                        "GET",
                        500,
                        started + 1,
                        200.0,
                        value if outlier_group is None else outlier_group,
                        "127.0.0.1",
                        True,
                        50.0,
                        _capture(value, functions, started),
                    )
                )
            store.write_requests(process, records)
            entry = ("dispatch", "/srv/app/app.py", 1)
            stacks = [
                ProfileStack(endpoint, groups[0], (entry, (f, f"{f}.py", 3)), 20, 20 * 9.0)
                for endpoint in endpoints
                for f in functions
            ]
            stacks.append(
                ProfileStack(
                    endpoints[0], groups[0], (entry, (functions[0], "grew.py", 9)), 20, 400 * slow
                )
            )
            store.write_profiles(process, stacks)
            store.update_process(process, last_seen=started + 60, dropped=0)
    finally:
        store.close()


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("hostile") / "store.sqlite3"
    _write_store(
        database,
        endpoints=[*PAYLOADS, LONG],
        groups=[*PAYLOADS, LONG],
        versions=VERSIONS,
        host=HOST,
        functions=FRAME_SAFE,
        outlier_values=[*PAYLOADS, LONG],
        requests_per_group=2,
    )
    return database


@pytest.fixture(scope="module")
def hostile_site(hostile_store: Path) -> Path:
    return write_site(str(hostile_store), hostile_store.parent / "site").parent


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


# -- looking at a page -------------------------------------------------------------------------

#: what a page may not hold if the payloads were drawn as markup; returns what it found
PROBE = """() => {
  const found = [];
  const xlink = "http://www.w3.org/1999/xlink";
  const ours = /assets\\/(plotly\\.min|site)\\.js$/;
  for (const a of document.querySelectorAll("a")) {
    const href = a.getAttribute("href") || a.getAttributeNS(xlink, "href") || "";
    if (/^\\s*(https?:)?\\/\\/evil|^\\s*javascript:/i.test(href)) found.push("link " + href);
    if (a.closest("svg")) found.push("a link inside a chart: " + a.textContent);
  }
  for (const el of document.querySelectorAll("b, img, span[style], object, embed, iframe")) {
    if (el.matches("iframe.profile")) continue;  // the outlier page's profile viewer
    found.push(el.outerHTML.slice(0, 120));
  }
  for (const el of document.querySelectorAll("script")) {
    const src = el.getAttribute("src") || "";
    if (!ours.test(src) && el.getAttribute("type") !== "application/json") {
      found.push("script " + el.outerHTML.slice(0, 120));
    }
  }
  for (const el of document.querySelectorAll("svg [style]")) {
    const style = el.getAttribute("style");
    if (/color:\\s*red|font-weight:\\s*bold/i.test(style)) found.push("styled " + el.textContent);
  }
  const texts = Array.from(document.querySelectorAll("svg text"), (t) => t.textContent);
  return {found: found, html: document.body.innerText, svg: texts};
}"""

#: hovers the first point of every chart, so that plotly draws its hover labels
HOVER = """() => {
  for (const el of document.querySelectorAll("[data-figure]")) {
    if (el.data && el.data.length && el.data[0].type !== "heatmap") {
      Plotly.Fx.hover(el, [{curveNumber: 0, pointNumber: 0}]);
    }
  }
}"""


class Visit:
    """Pages loaded one by one, with what every page showed and what went wrong anywhere."""

    def __init__(self, browser: Browser, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.html: list[str] = []  # each page's text
        self.svg: list[str] = []  # every chart text, hover labels included
        self.hovered = 0

    def page(self, url: str) -> None:
        page = self.context.new_page()
        page.on("dialog", lambda d: (self.dialogs.append(f"{url}: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(f"{url}: {e}"))
        try:
            response = page.goto(url, wait_until="load")
            assert response is not None, url
            assert response.ok, url
            self._draw(page)
            seen = page.evaluate(PROBE)
        finally:
            page.close()
        assert not seen["found"], (url, seen["found"])
        self.html.append(seen["html"])
        self.svg.extend(seen["svg"])

    def _draw(self, page: Page) -> None:
        charts = page.locator("[data-figure]")
        for i in range(charts.count()):
            charts.nth(i).locator("svg.main-svg").first.wait_for(timeout=20_000)
        if charts.count():
            page.evaluate(HOVER)
            self.hovered += page.locator(".hoverlayer .hovertext").count()

    def close(self) -> None:
        self.context.close()


def _shown(payload: str) -> str:
    """How a payload is shown: as the store keeps it (NUL and lone surrogates replaced), with
    control characters made visible."""
    return visible(storable(payload, UNCAPPED.name_chars))


def _assert_shown_literally(visit: Visit) -> None:
    """Each payload is shown, as text, wherever its word is; and it is shown somewhere."""
    assert not visit.dialogs, visit.dialogs
    assert not visit.errors, visit.errors
    assert visit.hovered > 10  # hover labels were drawn, and probed
    for payload, word in PAYLOADS.items():
        literal = _shown(payload)
        for text in visit.svg:
            if word in text:
                assert any(_shown(p) in text for p, w in PAYLOADS.items() if w == word), text
        assert any(literal in text for text in visit.svg), payload
        assert any(literal in text for text in visit.html), payload
    assert any("L" * 40 + "\u2026 (5,011 characters" in text for text in visit.svg)


def _site_pages(site: Path) -> list[str]:
    """Every page of a built site, by its path from the site's root."""
    return sorted(str(p.relative_to(site)) for p in site.rglob("*.html"))


# -- the tests ---------------------------------------------------------------------------------


def test_no_payload_is_drawn_as_markup_in_the_static_site(
    browser: Browser, hostile_site: Path
) -> None:
    pages = [p for p in _site_pages(hostile_site) if not p.endswith("profile.html")]
    assert len(pages) > 2 * len(PAYLOADS)  # every endpoint's page and every outlier's
    visit = Visit(browser)
    try:
        for path in pages:
            visit.page((hostile_site / path).as_uri())
    finally:
        visit.close()
    _assert_shown_literally(visit)


def test_no_payload_is_drawn_as_markup_in_the_live_dashboard(
    browser: Browser, hostile_store: Path, hostile_site: Path, tmp_path: Path
) -> None:
    database = tmp_path / "store.sqlite3"
    shutil.copyfile(hostile_store, database)
    app = _dashboard_app(database, tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="hostile-dashboard")
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}{PREFIX}/"
    visit = Visit(browser, http_credentials={"username": USER, "password": PASSWORD})
    try:
        pages = [p for p in _site_pages(hostile_site) if not p.endswith("profile.html")]
        for path in [*pages, "monitoring"]:
            visit.page(base + path)
    finally:
        visit.close()
        server.shutdown()
        serving.join()
        server.server_close()
        app.extensions["flamewatch"].close()
    _assert_shown_literally(visit)
    monitoring = visit.html[-1]
    for payload in PAYLOADS:
        assert _shown(payload) in monitoring, payload


def _dashboard_app(database: Path, instance: Path) -> Flask:
    app = shop_app("hostile", instance)
    Flamewatch(
        app,
        database=str(database),
        version="3.0",
        username=USER,
        password=generate_password_hash(PASSWORD),
        secret_key="the hostile dashboard's key",
        dashboard_cache_s=60,
    )
    return app


def test_the_profile_viewer_shows_hostile_function_names_as_text(
    browser: Browser, hostile_site: Path
) -> None:
    viewers = sorted(hostile_site.glob("outliers/*/profile.html"))
    assert viewers
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(viewers[0].as_uri(), wait_until="load")
        page.wait_for_selector("#app *", timeout=20_000)
        injected = page.evaluate(
            """() => Array.from(document.querySelectorAll(
                 "#app b, #app img, #app span[style*='color:red'], #app a[href*='evil']"),
               (el) => el.outerHTML.slice(0, 120))"""
        )
    finally:
        page.close()
    assert not dialogs
    assert not injected


# -- megabyte strings --------------------------------------------------------------------------

MEGABYTE = 1 << 20


def _huge(tag: str, size: int = MEGABYTE) -> str:
    return f"{tag}<b>" + "x" * size


@pytest.fixture(scope="module")
def huge_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("huge") / "store.sqlite3"
    _write_store(
        database,
        endpoints=["plain", _huge("endpoint", 100_000)],
        groups=[_huge("group"), *(f"{i}-" + "g" * 50_000 for i in range(40))],
        versions=["1.0", _huge("version", 100_000)],
        host=_huge("host", 100_000),
        functions=["f", _huge("function", 100_000)],
        outlier_values=[_huge(f"outlier-{i}") for i in range(4)],
        outlier_group=_huge("group"),
        requests_per_group=2,
    )
    return database


def test_every_page_stays_under_two_megabytes_whatever_the_stored_strings(
    huge_store: Path, tmp_path: Path
) -> None:
    assert huge_store.stat().st_size > 50 * MEGABYTE  # the megabytes really are stored
    site = write_site(str(huge_store), tmp_path / "site").parent
    pages = _site_pages(site)
    assert len(pages) > 8 + 5
    for path in pages:
        if not path.endswith("profile.html"):  # pyinstrument's page: the stored profile's size
            assert (site / path).stat().st_size <= MAX_PAGE_BYTES, path
    outlier = (site / "outliers" / "1.html").read_text()
    assert re.search(r"\u2026 \(1,048,5\d\d characters, #[0-9a-f]{8}\)", outlier)  # how long
    # a listing of the outliers (which a site holds while it is built) keeps no megabytes
    listed = list_outliers(str(huge_store))
    assert len(listed) == 8
    held = sum(len(o.version) + len(o.group or "") + len(o.path or "") for o in listed)
    assert held < 8 * 3 * 200, held
