"""The report's pages: every view of the store as HTML, written as a static site or served live.

:func:`read_site` reads the store once through :class:`~.aggregate.ReportData` (aggregation in
the database) into a :class:`Site`, which renders any one page on demand: :func:`write_site`
writes them all into a folder that opens from ``file://``, and the live dashboard
(``flamewatch.flask_plugin.dashboard``) renders the page a request asks for -- the same templates
and figures, one code path. Links are relative (the static site) or under a ``root`` prefix (the
dashboard's URL prefix). Templates render with autoescaping on (every value from a request is
escaped) and every string a template shows is first bounded and made visible
(:func:`~.text.shown`, as jinja's ``finalize``), so a page's size does not depend on how long
the stored strings are; each plotly figure is embedded as a JSON data block (``<``, ``>`` and
``&`` written as escapes, so no value can end the block) drawn by ``assets/site.js``; plotly.js
comes from the installed plotly package (never a CDN); each outlier's profile is exported as
``.pyisession``, ``.speedscope.json`` and pyinstrument's HTML page.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from flamewatch.sampler.frame_ids import parse_frame_identifier
from flamewatch.sampler.version import flamewatch_version

from .export import export_profile, to_speedscope
from .figures import (
    box_figure,
    grouped_box_figure,
    hits_per_day_figure,
    hour_heatmap_figure,
    medians_over_time_figure,
)
from .finding_words import amounts, headline_rest, no_path_words
from .findings import Finding
from .flame_figures import collapsed_stacks, diff_figure, flame_figure, speedscope_document
from .flames import Function, Profile, signed_ms
from .hosts import host_rows
from .model import EndpointRow
from .outliers import OutlierRow, load_outlier, session_of
from .reading import EndpointView, Flames, Reading
from .text import LIMIT, bounded_json, shorten, shown

__all__ = [
    "ASSETS",
    "PROFILE_FILES",
    "PageNotFound",
    "ReportError",
    "Site",
    "asset",
    "endpoint_page",
    "read_site",
    "timezone_of",
    "write_assets",
    "write_site",
]

_HERE = Path(__file__).parent
NONE = "\u2013"  # an en dash, for a value that does not exist
TIMES = "\u00d7"

#: the site's own files, under ``assets/``
ASSETS = ("style.css", "site.js", "plotly.min.js")
#: an outlier's profile downloads, under ``outliers/<id>/``: file name -> export format
PROFILE_FILES = {
    "profile.pyisession": "pyisession",
    "profile.speedscope.json": "speedscope",
    "profile.html": "html",
}
#: pages a live site keeps rendered (the most recently shown)
KEPT_PAGES = 64
#: an outlier page shows this many frames of a deeper stack at its threshold (root and leaf ends)
STACK_FRAMES_SHOWN = (20, 80)
#: the pages every site has, besides one per endpoint and one per outlier
FIXED_PAGES = ("index.html", "utilization.html", "performance.html", "versions.html")


class ReportError(Exception):
    """The report cannot be built (no store, bad timezone, unwritable output)."""


class PageNotFound(LookupError):
    """No page, outlier or profile of the site has this name."""


@dataclass(frozen=True)
class SiteInfo:
    """Facts every page shows."""

    store: str
    built_at: float
    timezone: str
    requests: int
    outliers: int
    change_threshold_pct: int
    alpha: float
    max_groups: int
    flamewatch_version: str


def endpoint_page(name: str) -> str:
    """The file name of an endpoint's page: readable, safe on every filesystem, unique."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[:60] or "endpoint"
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"endpoints/{safe}-{digest}.html"


def timezone_of(name: str) -> ZoneInfo:
    """The IANA timezone ``name``; :class:`ReportError` saying what to give otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"unknown timezone {name!r}; use an IANA name such as Europe/Amsterdam"
        ) from None


def read_site(
    database: str,
    *,
    timezone: str = "UTC",
    now: float | None = None,
    change_threshold: float = 0.2,
    max_groups: int = 15,
    live: bool = False,
) -> Site:
    """The site of ``database``: what each page shows is read from the store when a page first
    needs it (:class:`Reading`), so one page costs what that page shows.

    Raises :class:`~flamewatch.sampler.store.StoreError` when there is no readable store, or
    its schema predates the histograms.
    """
    tz = timezone_of(timezone)
    built_at = time.time() if now is None else now
    reading = Reading(
        database,
        now=built_at,
        change_threshold=change_threshold,
        max_groups=max_groups,
        per_endpoint=live,
        tz=tz,
    )
    store, requests, outliers = reading.check()
    info = SiteInfo(
        store=store,
        built_at=built_at,
        timezone=tz.key,
        requests=requests,
        outliers=outliers,
        change_threshold_pct=round(change_threshold * 100),
        alpha=reading.alpha,
        max_groups=max_groups,
        flamewatch_version=flamewatch_version(),
    )
    return Site(database, tz, info, reading, live=live)


class Site:
    """The report's pages over one reading of a store; renders any page on demand.

    A page is named by its path in the static site (``index.html``, ``endpoints/….html``,
    ``outliers/12.html``). ``root`` is what links to other pages start with: ``None`` for links
    relative to the page (the static site), or an absolute prefix ending in ``/`` (the live
    dashboard). ``live`` pages link to the dashboard's endpoint selection too.
    """

    def __init__(
        self,
        database: str,
        tz: ZoneInfo,
        info: SiteInfo,
        reading: Reading,
        *,
        live: bool = False,
    ) -> None:
        self.database = database
        self.tz = tz
        self.info = info
        self.reading = reading
        self.live = live
        self.env = _environment(tz)
        self._kept: OrderedDict[tuple[str, str | None], str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> list[EndpointRow]:
        return self.reading.endpoints

    @property
    def outliers(self) -> list[OutlierRow]:
        return self.reading.outliers

    @property
    def flames(self) -> Flames:
        return self.reading.flames

    @cached_property
    def _endpoints_by_page(self) -> dict[str, str]:
        return {endpoint_page(name): name for name in self.reading.endpoint_names}

    @cached_property
    def _outliers_by_id(self) -> dict[int, OutlierRow]:
        return {o.id: o for o in self.outliers}

    def pages(self, outliers: bool = True) -> list[str]:
        """Every page's path (with the outliers' own pages unless ``outliers`` is false)."""
        paths = [*FIXED_PAGES, "outliers.html", *self._endpoints_by_page]
        if outliers:
            paths += [f"outliers/{o.id}.html" for o in self.outliers]
        return paths

    def render(self, path: str, root: str | None = None) -> str:
        """The HTML of the page at ``path``; :class:`PageNotFound` when there is none.

        A live site keeps the last :data:`KEPT_PAGES` pages it rendered: a page is a function of
        the reading, so a dashboard shown again and again costs no rendering.
        """
        if not self.live:
            return self._render(path, root)
        key = (path, root)
        with self._lock:
            html = self._kept.get(key)
            if html is not None:
                self._kept.move_to_end(key)
                return html
        html = self._render(path, root)
        with self._lock:
            self._kept[key] = html
            while len(self._kept) > KEPT_PAGES:
                self._kept.popitem(last=False)
        return html

    def _render(self, path: str, root: str | None) -> str:
        n = self.reading
        if path == "index.html":
            return self.render_template(
                path, "index.html", root, endpoints=n.endpoints, versions=n.version_names
            )
        if path == "utilization.html":
            hits = n.hits_over_time
            charts = {
                "hits-per-day": hits_per_day_figure(hits.per_local_day, self.tz),
                "hour-heatmap": hour_heatmap_figure(hits.per_hour, self.tz),
            }
            return self.render_template(
                path,
                "utilization.html",
                root,
                charts,
                hosts=host_rows(n.processes),
                processes=n.processes,
            )
        if path == "performance.html":
            boxes = box_figure(sorted(n.by_endpoint.items()), x_title="endpoint")
            return self.render_template(path, "performance.html", root, {"endpoint-boxes": boxes})
        if path == "versions.html":
            return self.render_template(
                path,
                "versions.html",
                root,
                _diff_charts(self._findings, self.flames.functions),
                versions=n.versions,
                findings=self._findings,
            )
        if path == "outliers.html":
            return self.render_template(path, "outliers.html", root, outliers=self.outliers)
        endpoint = self._endpoints_by_page.get(path)
        if endpoint is not None:
            return self._render_endpoint(path, self.reading.endpoint_view(endpoint), root)
        match = re.fullmatch(r"outliers/([1-9][0-9]{0,17})\.html", path)
        if match is not None:
            return self.render_outlier(self.outlier(int(match[1])), root)
        raise PageNotFound(path)

    def outlier(self, outlier_id: int) -> OutlierRow:
        """An outlier of this reading of the store; :class:`PageNotFound` when unknown."""
        row = self._outliers_by_id.get(outlier_id)
        if row is None:
            raise PageNotFound(f"outlier {outlier_id}")
        return row

    def profile(self, outlier_id: int, file_name: str) -> bytes:
        """The profile download ``file_name`` (a key of :data:`PROFILE_FILES`) of an outlier."""
        fmt = PROFILE_FILES.get(file_name)
        row = self.outlier(outlier_id)
        stored = load_outlier(self.database, outlier_id)
        if fmt is None or stored["profile"] is None:
            raise PageNotFound(f"outliers/{outlier_id}/{file_name}")
        return _export(session_of(stored), fmt, row)

    def render_template(
        self,
        path: str,
        template: str,
        root: str | None = None,
        charts: dict[str, Any] | None = None,
        **context: Any,
    ) -> str:
        """Render ``template`` as the page at ``path``, with the context every page has."""
        blocks = [
            (chart_id, _json_for_script(figure)) for chart_id, figure in (charts or {}).items()
        ]
        return self.env.get_template(template).render(
            site=self.info,
            live=self.live,
            root="../" * path.count("/") if root is None else root,
            page=path,
            charts=blocks,
            **context,
        )

    def _render_endpoint(self, path: str, view: EndpointView, root: str | None) -> str:
        charts = _endpoint_charts(
            view.endpoint,
            view.by_version,
            view.by_group,
            view.by_group_version,
            view.per_day,
            self._version_order,
            self.tz,
        )
        profiles = self._profile_links(view.endpoint.name)
        charts.update((p.chart_id, p.figure) for p in profiles)
        charts.update(_diff_charts(view.findings, view.functions))
        if view.medians:
            marks = [
                (f.since, f"{f.verdict} {TIMES}{f.ratio:.2f}")
                for f, _ in view.findings
                if f.since is not None
            ]
            charts["over-time"] = medians_over_time_figure(view.medians, marks, self.tz)
        return self.render_template(
            path,
            "endpoint.html",
            root,
            endpoint=view.endpoint,
            changes=view.changes,
            outliers=view.outliers,
            profiles=profiles,
            findings=view.findings,
            over_time=bool(view.medians),
            charts=charts,
        )

    # -- aggregated profiles -------------------------------------------------------------------

    @cached_property
    def _version_order(self) -> list[str]:
        return self.reading.version_names

    @cached_property
    def _findings(self) -> list[tuple[Finding, str]]:
        """The version comparison's findings, each with the id of its differential chart."""
        return [(f, f"diff-{i}") for i, f in enumerate(self.flames.findings, 1)]

    def _profiles(self, endpoint: str) -> list[tuple[str, Profile, float, int]]:
        """(version, profile, mean ms, version number) of each profiled version of ``endpoint``."""
        return [
            (version, profile, mean_ms, self._version_order.index(version) + 1)
            for version, profile, mean_ms in self.reading.endpoint_view(endpoint).profiles
        ]

    def _profile_links(self, endpoint: str) -> list[_ProfileLinks]:
        """Each version's aggregated profile of ``endpoint``: its chart and its exports, which
        live in a folder next to the endpoint's page (named by version number, never by name)."""
        folder = _profile_folder(endpoint)
        functions = self.reading.endpoint_view(endpoint).functions
        return [
            _ProfileLinks(
                version=version,
                samples=profile.samples,
                total_ms=profile.total_ms,
                mean_ms=mean_ms,
                chart_id=f"flame-{number}",
                figure=flame_figure(profile, functions, mean_ms),
                speedscope=f"endpoints/{folder}/v{number}.speedscope.json",
                collapsed=f"endpoints/{folder}/v{number}.collapsed.txt",
            )
            for version, profile, mean_ms, number in self._profiles(endpoint)
        ]

    def profile_files(self, endpoint: str) -> list[str]:
        """The paths (from the site's root) of ``endpoint``'s aggregated-profile exports."""
        folder = _profile_folder(endpoint)
        return [
            f"endpoints/{folder}/v{number}.{kind}"
            for *_, number in self._profiles(endpoint)
            for kind in ("speedscope.json", "collapsed.txt")
        ]

    def profile_file(self, path: str) -> bytes:
        """An aggregated-profile export by its path from the site's root
        (``endpoints/<folder>/v<n>.speedscope.json`` or ``….collapsed.txt``);
        :class:`PageNotFound` when there is none."""
        match = re.fullmatch(
            r"endpoints/([^/]+)/v([1-9][0-9]{0,5})\.(speedscope\.json|collapsed\.txt)", path
        )
        if match is None:
            raise PageNotFound(path)
        folder, number, kind = match[1], int(match[2]), match[3]
        endpoint = self._endpoints_by_folder.get(folder)
        if endpoint is None:
            raise PageNotFound(path)
        functions = self.reading.endpoint_view(endpoint).functions
        for version, profile, _, found in self._profiles(endpoint):
            if found == number:
                if kind == "collapsed.txt":
                    return collapsed_stacks(profile, functions)
                title = f"{endpoint} in version {version}"
                return speedscope_document(profile, functions, title)
        raise PageNotFound(path)

    @cached_property
    def _endpoints_by_folder(self) -> dict[str, str]:
        return {_profile_folder(name): name for name in self.reading.endpoint_names}

    def render_outlier(
        self, row: OutlierRow, root: str | None = None, stored: dict[str, Any] | None = None
    ) -> str:
        """An outlier's page; ``stored`` is what :func:`load_outlier` read, if it was read."""
        if stored is None:
            stored = load_outlier(self.database, row.id)
        return self.render_template(
            f"outliers/{row.id}.html",
            "outlier.html",
            root,
            row=row,
            request=stored["request"],
            resources=stored["resources"],
            threshold_stack=stored["threshold_stack"],
            note=stored["note"],
            has_profile=stored["profile"] is not None,
        )


def write_site(
    database: str,
    output: Path,
    *,
    timezone: str = "UTC",
    now: float | None = None,
    change_threshold: float = 0.2,
    max_groups: int = 15,
    quiet: bool = True,
) -> Path:
    """Build the site for ``database`` into ``output``; return the path of its ``index.html``."""
    timezone_of(timezone)  # a bad timezone is refused before anything is written
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "endpoints").mkdir(exist_ok=True)
        (output / "outliers").mkdir(exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write the site into {str(output)!r}: {exc.strerror}") from None
    site = read_site(
        database,
        timezone=timezone,
        now=now,
        change_threshold=change_threshold,
        max_groups=max_groups,
    )
    write_assets(output / "assets")
    with site.reading.held():
        _write_pages(site, output, quiet)
    return output / "index.html"


def _write_pages(site: Site, output: Path, quiet: bool) -> None:
    pages = site.pages(outliers=False)
    with _progress(len(pages) + len(site.outliers), quiet) as advance:
        for path in pages:
            (output / path).write_text(site.render(path), encoding="utf-8")
            advance()
        for endpoint in site.endpoints:
            for path in site.profile_files(endpoint.name):
                (output / path).parent.mkdir(exist_ok=True)
                (output / path).write_bytes(site.profile_file(path))
        for outlier in site.outliers:
            _write_outlier(site, output, outlier)
            advance()


def _write_outlier(site: Site, output: Path, outlier: OutlierRow) -> None:
    stored = load_outlier(site.database, outlier.id)  # read once for the page and its files
    page = site.render_outlier(outlier, stored=stored)
    (output / f"outliers/{outlier.id}.html").write_text(page, encoding="utf-8")
    if stored["profile"] is None:
        return
    session = session_of(stored)
    folder = output / "outliers" / str(outlier.id)
    folder.mkdir(exist_ok=True)
    for file_name, fmt in PROFILE_FILES.items():
        (folder / file_name).write_bytes(_export(session, fmt, outlier))


def _export(session: Any, fmt: str, outlier: OutlierRow) -> bytes:
    if fmt == "speedscope":
        return to_speedscope(session, f"outlier #{outlier.id} ({shorten(outlier.endpoint)})")
    return export_profile(session, fmt)


def _endpoint_charts(
    endpoint: EndpointRow,
    by_version: list[tuple[str, Any]],
    by_group: list[tuple[str, Any]],
    by_group_version: dict[str, list[tuple[str, Any]]],
    per_day: list[Any],
    version_order: list[str],
    tz: ZoneInfo,
) -> dict[str, Any]:
    if endpoint.box is None:
        return {}
    return {
        "by-version": box_figure(by_version, x_title="version"),
        "by-group": box_figure(by_group, x_title="user or group"),
        "by-group-version": grouped_box_figure(
            by_group_version, x_order=version_order, x_title="version"
        ),
        "hits": hits_per_day_figure(per_day, tz, stacked=False),
    }


@dataclass(frozen=True)
class _ProfileLinks:
    version: str
    samples: int
    total_ms: float
    mean_ms: float
    chart_id: str
    figure: dict[str, Any]
    speedscope: str  # from the site's root
    collapsed: str


def _diff_charts(
    findings: list[tuple[Finding, str]], functions: dict[int, Function]
) -> dict[str, Any]:
    """The differential flamegraph of each finding that has functions to show."""
    return {
        chart_id: diff_figure(f.before, f.after, functions, f.mean_before_ms, f.mean_after_ms)
        for f, chart_id in findings
        if f.before is not None and f.after is not None and f.paths
    }


def _profile_folder(endpoint: str) -> str:
    """The folder, next to the endpoint's page, of its aggregated-profile exports."""
    return endpoint_page(endpoint).removeprefix("endpoints/").removesuffix(".html")


def _json_for_script(figure: Any) -> Any:
    """JSON safe inside a ``<script type="application/json">``: no ``<`` can end the block."""
    text = orjson.dumps(figure).decode()
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@lru_cache(maxsize=8)
def _environment(tz: ZoneInfo) -> Environment:
    """The templates' environment for a time zone: one per process and zone, so that a live
    page rendered with the cache off does not compile its templates again each time."""
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def when(timestamp: float | None) -> str:
        if timestamp is None:
            return "never"
        return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S")

    def finding_headline(finding: Finding) -> Markup:
        """The headline ``flamewatch changes`` prints, after the endpoint's name; the stored
        names in it are shown bounded already, so the whole sentence is never cut."""
        text = headline_rest(finding, lambda t: f"{when(t)} {tz.key}", shown)
        return Markup(escape(text))

    env.filters.update(
        when=when,
        finding_headline=finding_headline,
        path_amounts=amounts,
        no_path_words=no_path_words,
        signed_ms=signed_ms,
        share=lambda v: f"{v:.0%}",
        ms=lambda v: NONE if v is None else f"{v:,.2f}" if v < 100 else f"{v:,.0f}",
        ratio=lambda v: f"{TIMES}{v:.2f}",
        pct=lambda v: f"{v:.0f} %" if _is_number(v) else NONE,
        mib=lambda v: f"{v / 2**20:,.0f} MiB" if _is_number(v) else NONE,
        pretty=lambda v: Markup(escape(bounded_json(v))),  # bounded already, shown whole
        whole=lambda v: Markup(escape(v)),  # a form's value: the stored name, not cut
        frame_label=_frame_label,
        frames_shown=_frames_shown,
        endpoint_page=endpoint_page,
    )
    return env


def _is_number(value: Any) -> bool:
    """Whether a stored load figure is there to show (it may be missing, or not a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finalize(value: Any) -> Any:
    """What every ``{{ expression }}`` shows, before autoescaping: a string is cut to
    :data:`~.text.LIMIT` with a mark and its invisible characters written out; markup that a
    filter or macro made (``pretty``, ``whole``, a chart's JSON) is left as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return shown(value, LIMIT)
    return value


def _frames_shown(frames: list[str]) -> list[str]:
    """A stack's frames as an outlier page lists them: the ends of a deep one, with a mark."""
    head, tail = STACK_FRAMES_SHOWN
    if len(frames) <= head + tail:
        return frames
    left_out = len(frames) - head - tail
    return [*frames[:head], f"\u2026 {left_out:,} frames left out \u2026", *frames[-tail:]]


def _frame_label(identifier: str) -> str:
    """``function (file:line)`` from a pyinstrument frame identifier."""
    frame = parse_frame_identifier(identifier)
    name = frame.qualified_name
    return f"{name}  ({frame.file}:{frame.line})" if frame.file else name


def asset(name: str) -> bytes:
    """The bytes of one of :data:`ASSETS`; :class:`PageNotFound` for any other name."""
    if name not in ASSETS:
        raise PageNotFound(f"assets/{name}")
    if name == "plotly.min.js":
        return _plotly_js()
    return (_HERE / "assets" / name).read_bytes()


def _plotly_js() -> bytes:
    # lazy: plotly takes ~130 ms to import, and the dashboard imports this module
    from plotly.offline import get_plotlyjs  # noqa: PLC0415 -- lazy start-up

    return get_plotlyjs().encode("utf-8")  # type: ignore[no-any-return]


def write_assets(folder: Path) -> None:
    """Copy :data:`ASSETS` into ``folder`` (plotly.js only when it changed)."""
    folder.mkdir(exist_ok=True)
    for name in ("style.css", "site.js"):
        shutil.copyfile(_HERE / "assets" / name, folder / name)
    plotly_js = folder / "plotly.min.js"
    script = _plotly_js()
    if not plotly_js.exists() or plotly_js.stat().st_size != len(script):
        plotly_js.write_bytes(script)


@contextmanager
def _progress(steps: int, quiet: bool) -> Iterator[Callable[[], None]]:
    if quiet:
        yield lambda: None
        return
    with click.progressbar(length=steps, label="Building the report", file=sys.stderr) as bar:
        yield lambda: bar.update(1)
