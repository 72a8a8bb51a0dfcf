"""The static report site: every view of the store as HTML pages that open from ``file://``.

:func:`write_site` reads the store through :class:`~.aggregate.ReportData` (aggregation in the
database), renders jinja2 templates with autoescaping on (every value from a request is escaped),
embeds each plotly figure as a JSON data block drawn by ``assets/site.js``, writes plotly.js once
into ``assets/`` from the installed plotly package (never a CDN), and exports each outlier's
profile as ``.pyisession``, ``.speedscope.json`` and pyinstrument's HTML page.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .aggregate import ReportData
from .export import to_html, to_pyisession, to_speedscope
from .figures import box_figure, grouped_box_figure, hits_per_day_figure, hour_heatmap_figure
from .flame_figures import collapsed_stacks, diff_figure, flame_figure, speedscope_document
from .flames import Finding, FlameReport, Function, Profile, signed_ms
from .model import EndpointRow
from .outliers import OutlierRow, list_outliers, load_outlier, session_of
from .summary import open_readonly, sqlite_path

__all__ = ["ReportError", "endpoint_page", "write_site"]

_HERE = Path(__file__).parent
NONE = "\u2013"  # an en dash, for a value that does not exist
TIMES = "\u00d7"


class ReportError(Exception):
    """The report cannot be built (no store, bad timezone, unwritable output)."""


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
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"unknown timezone {timezone!r}; use an IANA name such as Europe/Amsterdam"
        ) from None
    built_at = time.time() if now is None else now
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "endpoints").mkdir(exist_ok=True)
        (output / "outliers").mkdir(exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write the site into {str(output)!r}: {exc.strerror}") from None
    with open_readonly(database) as conn:
        data = ReportData(
            conn, now=built_at, change_threshold=change_threshold, max_groups=max_groups
        )
        endpoints = data.endpoints()
        versions = data.versions()
        changes = data.changes()
        hourly = data.hourly_hits()
        by_endpoint = data.box_by_endpoint()
        by_version = data.boxes_by_version()
        by_group = data.boxes_by_group()
        by_group_version = data.boxes_by_group_version()
        flames = _read_flames(FlameReport(conn, data), endpoints, by_version)
    outliers = list_outliers(database)
    site = SiteInfo(
        store=str(sqlite_path(database)),
        built_at=built_at,
        timezone=tz.key,
        requests=sum(v.requests for v in versions),
        outliers=sum(e.outliers for e in endpoints),
        change_threshold_pct=round(change_threshold * 100),
        alpha=data.alpha,
        max_groups=max_groups,
        flamewatch_version=_flamewatch_version(),
    )
    pages = _Pages(output, _environment(tz), site)
    _write_assets(output)
    version_order = [v.name for v in versions]
    steps = 5 + len(endpoints) + len(outliers)
    with _progress(steps, quiet) as advance:
        pages.write("index.html", "index.html", endpoints=endpoints, versions=versions)
        advance()
        pages.write(
            "utilization.html",
            "utilization.html",
            charts={
                "hits-per-day": hits_per_day_figure(hourly, tz),
                "hour-heatmap": hour_heatmap_figure(hourly, tz),
            },
        )
        advance()
        pages.write(
            "performance.html",
            "performance.html",
            charts={"endpoint-boxes": box_figure(sorted(by_endpoint.items()), x_title="endpoint")},
        )
        advance()
        version_findings = [(f, f"diff-{i}") for i, f in enumerate(flames.findings, 1)]
        pages.write(
            "versions.html",
            "versions.html",
            versions=versions,
            findings=version_findings,
            charts=_diff_charts(version_findings, flames.functions),
        )
        advance()
        pages.write("outliers.html", "outliers.html", outliers=outliers)
        advance()
        for endpoint in endpoints:
            charts = _endpoint_charts(
                endpoint,
                by_version.get(endpoint.name, []),
                by_group.get(endpoint.name, []),
                by_group_version.get(endpoint.name, {}),
                [h for h in hourly if h.endpoint == endpoint.name],
                version_order,
                tz,
            )
            profiles = _write_profiles(output, endpoint.name, flames, version_order)
            charts.update((p.chart_id, p.figure) for p in profiles)
            findings = [(f, c) for f, c in version_findings if f.endpoint == endpoint.name]
            charts.update(_diff_charts(findings, flames.functions))
            pages.write(
                endpoint_page(endpoint.name),
                "endpoint.html",
                endpoint=endpoint,
                changes=[c for c in changes if c.endpoint == endpoint.name],
                outliers=[o for o in outliers if o.endpoint == endpoint.name],
                profiles=profiles,
                findings=findings,
                charts=charts,
            )
            advance()
        for outlier in outliers:
            _write_outlier(pages, database, outlier)
            advance()
    return output / "index.html"


def _endpoint_charts(
    endpoint: EndpointRow,
    by_version: list[tuple[str, Any]],
    by_group: list[tuple[str, Any]],
    by_group_version: dict[str, list[tuple[str, Any]]],
    hourly: list[Any],
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
        "hits": hits_per_day_figure(hourly, tz, stacked=False),
    }


@dataclass(frozen=True)
class _Flames:
    """What the site shows of the aggregated profiles, read while the store is open."""

    functions: dict[int, Function]
    findings: list[Finding]
    profiles: dict[str, list[tuple[str, Profile, float]]]  # endpoint -> (version, profile, mean)


@dataclass(frozen=True)
class _ProfileLinks:
    version: str
    samples: int
    total_ms: float
    mean_ms: float
    chart_id: str
    figure: dict[str, Any]
    speedscope: str  # relative to the endpoint's page
    collapsed: str


def _read_flames(
    report: FlameReport, endpoints: list[EndpointRow], by_version: dict[str, list[tuple[str, Any]]]
) -> _Flames:
    profiles: dict[str, list[tuple[str, Profile, float]]] = {}
    for endpoint in endpoints:
        means = dict(by_version.get(endpoint.name, []))
        found = []
        for version in report.profiled_versions(endpoint.name):
            profile = report.profile(endpoint.name, version)
            if profile is not None and profile.total_ms > 0 and version in means:
                found.append((version, profile, means[version].mean))
        profiles[endpoint.name] = found
    return _Flames(report.functions, report.findings, profiles)


def _write_profiles(
    output: Path, endpoint: str, flames: _Flames, version_order: list[str]
) -> list[_ProfileLinks]:
    """Each version's aggregated profile of ``endpoint``: its chart, and its exports written
    into a folder next to the endpoint's page (file names by version number, never by name)."""
    found = flames.profiles.get(endpoint, [])
    if not found:
        return []
    page = endpoint_page(endpoint)
    folder_name = page.removeprefix("endpoints/").removesuffix(".html")
    folder = output / "endpoints" / folder_name
    folder.mkdir(exist_ok=True)
    links = []
    for version, profile, mean_ms in found:
        number = version_order.index(version) + 1
        title = f"{endpoint} in version {version}"
        (folder / f"v{number}.speedscope.json").write_bytes(
            speedscope_document(profile, flames.functions, title)
        )
        (folder / f"v{number}.collapsed.txt").write_bytes(
            collapsed_stacks(profile, flames.functions)
        )
        links.append(
            _ProfileLinks(
                version=version,
                samples=profile.samples,
                total_ms=profile.total_ms,
                mean_ms=mean_ms,
                chart_id=f"flame-{number}",
                figure=flame_figure(profile, flames.functions, mean_ms),
                speedscope=f"{folder_name}/v{number}.speedscope.json",
                collapsed=f"{folder_name}/v{number}.collapsed.txt",
            )
        )
    return links


def _diff_charts(
    findings: list[tuple[Finding, str]], functions: dict[int, Function]
) -> dict[str, Any]:
    """The differential flamegraph of each finding that has functions to show."""
    return {
        chart_id: diff_figure(f.before, f.after, functions, f.previous_mean_ms, f.mean_ms)
        for f, chart_id in findings
        if f.before is not None and f.after is not None and f.functions
    }


def _write_outlier(pages: _Pages, database: str, outlier: OutlierRow) -> None:
    stored = load_outlier(database, outlier.id)
    has_profile = stored["profile"] is not None
    if has_profile:
        session = session_of(stored)
        folder = pages.output / "outliers" / str(outlier.id)
        folder.mkdir(exist_ok=True)
        (folder / "profile.pyisession").write_bytes(to_pyisession(session))
        (folder / "profile.speedscope.json").write_bytes(
            to_speedscope(session, f"outlier #{outlier.id} ({outlier.endpoint})")
        )
        (folder / "profile.html").write_bytes(to_html(session))
    pages.write(
        f"outliers/{outlier.id}.html",
        "outlier.html",
        row=outlier,
        request=stored["request"],
        resources=stored["resources"],
        threshold_stack=stored["threshold_stack"],
        note=stored["note"],
        has_profile=has_profile,
    )


class _Pages:
    def __init__(self, output: Path, env: Environment, site: SiteInfo) -> None:
        self.output = output
        self.env = env
        self.site = site

    def write(
        self, path: str, template: str, charts: dict[str, Any] | None = None, **context: Any
    ) -> None:
        root = "../" * path.count("/")
        blocks = [
            (chart_id, _json_for_script(figure)) for chart_id, figure in (charts or {}).items()
        ]
        html = self.env.get_template(template).render(
            site=self.site, root=root, page=path, charts=blocks, **context
        )
        (self.output / path).write_text(html, encoding="utf-8")


def _json_for_script(figure: Any) -> Any:
    """JSON safe inside a ``<script type="application/json">``: no ``<`` can end the block."""
    from markupsafe import Markup

    text = orjson.dumps(figure).decode()
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _environment(tz: ZoneInfo) -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def when(timestamp: float | None) -> str:
        if timestamp is None:
            return "never"
        return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S")

    env.filters.update(
        when=when,
        ms=lambda v: NONE if v is None else f"{v:,.2f}" if v < 100 else f"{v:,.0f}",
        ratio=lambda v: f"{TIMES}{v:.2f}",
        pct=lambda v: NONE if v is None else f"{v:.0f} %",
        mib=lambda v: NONE if v is None else f"{v / 2**20:,.0f} MiB",
        pretty=lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode(),
        frame_label=_frame_label,
        signed_ms=signed_ms,
        share=lambda v: f"{v:.0%}",
        endpoint_page=endpoint_page,
    )
    return env


def _frame_label(identifier: str) -> str:
    """``function (file:line)`` from a pyinstrument frame identifier."""
    head, _, attributes = identifier.partition("\x01")
    parts = head.split("\x00")
    function, filename = parts[0], parts[1] if len(parts) > 1 else ""
    line = next((a[1:] for a in attributes.split("\x01") if a.startswith("l")), "")
    owner = next((a[1:] for a in attributes.split("\x01") if a.startswith("c")), "")
    name = f"{owner}.{function}" if owner else function
    return f"{name}  ({filename}:{line})" if filename else name


def _write_assets(output: Path) -> None:
    from plotly.offline import get_plotlyjs

    assets = output / "assets"
    assets.mkdir(exist_ok=True)
    for name in ("style.css", "site.js"):
        shutil.copyfile(_HERE / "assets" / name, assets / name)
    plotly_js = assets / "plotly.min.js"
    script = get_plotlyjs().encode("utf-8")
    if not plotly_js.exists() or plotly_js.stat().st_size != len(script):
        plotly_js.write_bytes(script)


@contextmanager
def _progress(steps: int, quiet: bool) -> Iterator[Callable[[], None]]:
    if quiet:
        yield lambda: None
        return
    with click.progressbar(length=steps, label="Building the report", file=sys.stderr) as bar:
        yield lambda: bar.update(1)


def _flamewatch_version() -> str:
    try:
        return package_version("flamewatch")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
