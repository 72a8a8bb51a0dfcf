"""The live dashboard: the report's pages served by the app itself, and endpoint selection.

A blueprint registered by ``init_app`` under ``FLAMEWATCH_URL_PREFIX``. Its pages are the
static site's pages (:class:`flamewatch.reports.site.Site`, the same templates and figures), at
the same paths, with links under the prefix; what they show is read from the app's store at most
once every ``FLAMEWATCH_DASHBOARD_CACHE_S`` seconds per process, so a busy dashboard does not
load the app. One page is the dashboard's own: *Monitoring*, where each endpoint's monitor flag
is switched (a POST with a CSRF token); the writer thread writes the flag with the app's one
store link, and it is honoured by this process at once and by every other worker process at
its writer's next flag refresh (~2 s).
And ``/metrics``: the store's latency histograms for Prometheus (:mod:`flamewatch.reports.
metrics`), which a scraper may also read with ``FLAMEWATCH_METRICS_TOKEN`` (:mod:`.bearer`).

Every response under the prefix (also 401, 404, 405, 429 and errors) is private and never
stored (``Cache-Control``), carries ``X-Content-Type-Options: nosniff`` and a
Content-Security-Policy without inline script, and may not be framed. The one exception to
the policy is pyinstrument's profile viewer, a page of inline script and style: it gets a
policy of its own allowing exactly its own inline blocks (by hash) and nothing else -- no
network, no forms -- and may be framed by the dashboard only. Ids and file names in URLs are
matched by converters (ids: ASCII digits only) and looked up in the store's data; no URL
names a file, and a download's offered file name is built from safe characters only
(:func:`~flamewatch.reports.export.content_disposition`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    g,
    redirect,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.routing import IntegerConverter

from flamewatch.reports.export import content_disposition
from flamewatch.reports.metrics import (
    OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_CONTENT_TYPE,
    MetricsCache,
    read_store_metrics,
    render,
    wants_openmetrics,
)
from flamewatch.reports.site import (
    ASSETS,
    PROFILE_FILES,
    PageNotFound,
    Site,
    asset,
    read_site,
)
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.logs import log
from flamewatch.sampler.store import StoreError, read_monitor_flags

from .agent import routes_of
from .auth import CsrfTokens, Gate
from .bearer import MetricsGate

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["BLUEPRINT_NAME", "Dashboard", "register_dashboard"]

BLUEPRINT_NAME = "flamewatch"  # its endpoints, flamewatch.*, are never monitored
ID_CONVERTER = "flamewatch_id"

#: No inline script, no plugin, no other origin. Inline *style* is allowed because plotly.js
#: writes its own <style> element and style attributes as it draws (with ``style-src 'self'``
#: Chromium blocks them and the charts lose their mode bar and hover styling); a style cannot
#: run code, and img-src/connect-src keep a stylesheet from reaching another origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data: blob:;"
    " font-src 'self' data:; connect-src 'none'; frame-src 'self'; form-action 'self';"
    " base-uri 'none'; frame-ancestors 'none'"
)
PAGE_CACHE_CONTROL = "private, no-store"
#: a reading of the store is reused at least this many times as long as it took
REUSE_FACTOR = 10
#: a scrape reuses a reading of the metrics at least this long (s): many scrapers, one reading
METRICS_CACHE_S = 1.0
#: plotly.js is 4 MB of public code: the browser may keep it, but checks it on every use
ASSET_CACHE_CONTROL = "private, no-cache"

_MEDIA_TYPES = {
    "pyisession": "application/json",
    "speedscope": "application/json",
    "collapsed": "text/plain; charset=utf-8",
    "html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def register_dashboard(app: Flask, agent: Agent) -> None:
    """Register the dashboard's blueprint on ``app`` unless ``FLAMEWATCH_DASHBOARD`` is off."""
    settings = agent.settings
    if not settings.dashboard:
        return
    dashboard = Dashboard(agent)
    app.url_map.converters.setdefault(ID_CONVERTER, AsciiIdConverter)
    app.register_blueprint(dashboard.blueprint(), url_prefix=settings.url_prefix)
    agent.unrouted = _secure_under(settings.url_prefix)


class AsciiIdConverter(IntegerConverter):
    """An id of ASCII digits only: werkzeug's ``int`` matches ``\\d``, which takes any script's
    digits ('١٢٣' would be outlier 123), so one outlier would have endless URLs."""

    regex = r"[0-9]+"


def _secure_under(prefix: str) -> Callable[[Request, Response], Response]:
    """What gives the 404 and 405 of URLs under ``prefix`` that no dashboard rule matched the
    dashboard's headers (the blueprint's own hooks never see them). Called by the dispatch
    wrapper (:mod:`.hooks`) only for a request that matched no rule: the app's own requests
    pay nothing for it."""
    under = prefix + "/"

    def secure(request: Request, response: Response) -> Response:
        path = request.path
        if path.startswith(under) or path == prefix:
            _secure(response)
        return response

    return secure


@dataclass(frozen=True)
class MonitoredEndpoint:
    """One line of the endpoint selection."""

    name: str
    rules: list[str]
    methods: list[str]
    hits: int
    last_accessed: float | None
    monitored: bool
    excluded: bool  # by the configuration: cannot be switched on here


class Dashboard:
    """The dashboard of one app: its gate, its CSRF tokens and its cached reading of the store."""

    def __init__(self, agent: Agent, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.settings = agent.settings
        self.gate = Gate(self.settings, clock)
        self.csrf = CsrfTokens(self.settings.secret_key)
        self.metrics_gate = MetricsGate(self.gate, clock)
        self.metrics = MetricsCache(
            lambda: read_store_metrics(self.agent.database), METRICS_CACHE_S, clock
        )
        self._clock = clock
        self._cached: tuple[float, Site] | None = None  # (reuse until, reading)
        self._lock = threading.Lock()

    # -- reading the store ---------------------------------------------------------------------

    def site(self) -> Site:
        """The store's pages as read a moment ago: a reading is reused for ``dashboard_cache_s``
        seconds, and at least :data:`REUSE_FACTOR` times as long as it took, so that reading a
        big store takes at most a small share of the process however busy the dashboard."""
        with self._lock:  # one reading at a time; the requests waiting for it reuse it
            cached = self._cached
            now = self._clock()
            if cached is not None and now < cached[0]:
                return cached[1]
            site = read_site(self.agent.database, live=True)
            took = self._clock() - now
            cache_s = self.settings.dashboard_cache_s  # 0: read on every page (to debug, to test)
            self._cached = (now + (cache_s and max(cache_s, REUSE_FACTOR * took)), site)
            return site

    # -- the blueprint -------------------------------------------------------------------------

    def blueprint(self) -> Blueprint:
        bp = Blueprint(BLUEPRINT_NAME, __name__)
        bp.before_request(self._authenticate)
        bp.after_request(_secure)  # unrouted 404s and 405s: see _secure_under
        bp.register_error_handler(StoreError, _no_store)
        bp.add_url_rule("/", "index", lambda: self._page("index.html"))
        bp.add_url_rule("/index.html", "index_html", lambda: self._page("index.html"))
        bp.add_url_rule(
            "/<any(utilization, performance, versions, outliers):name>.html",
            "view",
            lambda name: self._page(f"{name}.html"),
        )
        bp.add_url_rule(
            "/endpoints/<page>", "endpoint", lambda page: self._page(f"endpoints/{page}")
        )
        bp.add_url_rule(
            "/endpoints/<folder>/<file_name>", "endpoint_profile", self._endpoint_profile
        )
        bp.add_url_rule(f"/outliers/<{ID_CONVERTER}:outlier_id>.html", "outlier", self._outlier)
        files = ", ".join(PROFILE_FILES)
        bp.add_url_rule(
            f"/outliers/<{ID_CONVERTER}:outlier_id>/<any({files}):file_name>",
            "profile",
            self._profile,
        )
        bp.add_url_rule(f"/assets/<any({', '.join(ASSETS)}):name>", "asset", self._asset)
        bp.add_url_rule("/monitoring", "monitoring", self._monitoring, methods=["GET"])
        bp.add_url_rule("/monitoring", "toggle", self._toggle, methods=["POST"])
        bp.add_url_rule("/metrics", "metrics", self._metrics)
        return bp

    def _authenticate(self) -> Response | None:
        if request.endpoint == f"{BLUEPRINT_NAME}.metrics":
            verdict = self.metrics_gate.check(current_app, request)
        else:
            verdict = self.gate.check(current_app, request)
        if isinstance(verdict, Response):
            return verdict
        g._flamewatch_user = verdict
        return None

    def _root(self) -> str:
        return url_for(f"{BLUEPRINT_NAME}.index")

    def _page(self, path: str) -> Response:
        try:
            html = self.site().render(path, self._root())
        except PageNotFound:
            abort(404)
        return Response(html, mimetype="text/html")

    def _outlier(self, outlier_id: int) -> Response:
        return self._page(f"outliers/{outlier_id}.html")

    def _profile(self, outlier_id: int, file_name: str) -> Response:
        try:
            body = self.site().profile(outlier_id, file_name)
        except PageNotFound:
            abort(404)
        fmt = PROFILE_FILES[file_name]
        download = f"flamewatch-outlier-{outlier_id}{file_name.removeprefix('profile')}"
        response = Response(body, content_type=_MEDIA_TYPES[fmt])
        if fmt == "html":  # framed by the outlier page; its link's `download` attribute saves it
            response.headers["Content-Disposition"] = content_disposition("inline", download)
            response.headers["Content-Security-Policy"] = _viewer_policy(body)
            response.headers["X-Frame-Options"] = "SAMEORIGIN"
        else:
            response.headers["Content-Disposition"] = content_disposition("attachment", download)
        return response

    def _endpoint_profile(self, folder: str, file_name: str) -> Response:
        """An aggregated profile's export (speedscope or collapsed stacks), as a download."""
        try:
            body = self.site().profile_file(f"endpoints/{folder}/{file_name}")
        except PageNotFound:
            abort(404)
        kind = "speedscope" if file_name.endswith(".speedscope.json") else "collapsed"
        response = Response(body, content_type=_MEDIA_TYPES[kind])
        download = f"flamewatch-{folder}-{file_name}"
        response.headers["Content-Disposition"] = content_disposition("attachment", download)
        return response

    def _asset(self, name: str) -> Response:
        response = Response(asset(name), content_type=_MEDIA_TYPES[name[name.rindex(".") :]])
        response.headers["Cache-Control"] = ASSET_CACHE_CONTROL
        response.add_etag()
        response.make_conditional(request)
        return response

    def _metrics(self) -> Response:
        """The latency histograms of every process sharing the store, for scrapers
        (:mod:`flamewatch.reports.metrics`)."""
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        response = Response(
            render(self.metrics.get(), openmetrics=openmetrics),
            content_type=OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE,
        )
        response.vary.add("Accept")
        return response

    # -- endpoint selection --------------------------------------------------------------------

    def _monitoring(self) -> Response:
        site = self.site()
        user: str = g._flamewatch_user
        html = site.render_template(
            "monitoring",
            "monitoring.html",
            self._root(),
            endpoints=self._selection(site, _stored_flags(self.agent.database)),
            csrf_token=self.csrf.token(current_app, user),
            user=user,
        )
        return Response(html, mimetype="text/html")

    def _selection(self, site: Site, flags: dict[str, bool]) -> list[MonitoredEndpoint]:
        """The store's endpoints and the app's (some may not be stored yet), flamewatch's not;
        the facts as cached, the flags as stored now."""
        is_excluded = self.agent.settings.is_excluded
        rows = {
            e.name: MonitoredEndpoint(
                e.name,
                e.rules,
                e.methods,
                e.hits,
                e.last_accessed,
                flags.get(e.name, e.monitored),
                is_excluded(e.name),
            )
            for e in site.endpoints
        }
        for name, (rules, methods) in _app_routes(current_app).items():
            if name not in rows:
                monitored = flags.get(name, True) and not is_excluded(name)
                rows[name] = MonitoredEndpoint(
                    name, rules, methods, 0, None, monitored, is_excluded(name)
                )
        return [row for name, row in sorted(rows.items()) if not _is_own(name)]

    def _toggle(self) -> ResponseReturnValue:
        user: str = g._flamewatch_user
        app: Flask = current_app
        if not self.csrf.valid(app, user, request.form.get("csrf_token")):
            return _plain(
                403,
                "This form is out of date or not yours (its CSRF token is missing or wrong);"
                " reload the Monitoring page and try again.",
            )
        name, value = request.form.get("endpoint"), request.form.get("monitored")
        if name is None or value not in ("0", "1"):
            return _plain(400, "A toggle names an endpoint and monitored=0 or 1.")
        if _is_own(name) or self.agent.settings.is_excluded(name):
            return _plain(400, "This endpoint is excluded by the configuration.")
        monitored = value == "1"
        try:  # with the writer's store link: one store per app (see Agent.switch_monitoring)
            known = self.agent.switch_monitoring(name, monitored, set(_app_routes(app)))
        except StoreError as exc:
            return _plain(
                503,
                f"The switch could not be stored ({exc}); nothing changed. Try again in a few"
                " seconds.",
            )
        if not known:
            abort(404)
        log.info(
            "flamewatch: %s switched monitoring of %r %s",
            f"dashboard user {user!r}" if user else "the dashboard",
            name,
            "on" if monitored else "off",
        )
        return redirect(url_for(f"{BLUEPRINT_NAME}.monitoring"), 303)


def _stored_flags(database: str) -> dict[str, bool]:
    """Each stored endpoint's monitor flag, read now (one small query, never cached)."""
    with open_readonly(database) as conn:
        return read_monitor_flags(conn)


def _app_routes(app: Flask) -> dict[str, tuple[list[str], list[str]]]:
    """The app's rules and methods per endpoint, from the route listing the writer syncs."""
    routes: dict[str, tuple[list[str], list[str]]] = {}
    for route in routes_of(app):
        rules, methods = routes.setdefault(route.endpoint, ([], []))
        rules.append(route.rule)
        methods[:] = sorted(set(methods) | set(route.methods))
    return routes


def _is_own(endpoint: str) -> bool:
    return endpoint == BLUEPRINT_NAME or endpoint.startswith(BLUEPRINT_NAME + ".")


def _secure(response: Response) -> Response:
    """The headers every dashboard response carries (a view may have set its own policy)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cache-Control", PAGE_CACHE_CONTROL)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


def _viewer_policy(page: bytes) -> str:
    """pyinstrument's viewer may run its own inline script and style, and nothing else.

    Its page inlines the viewer's script and style sheet (``to_html``), so a policy without
    inline script would stop it. Rather than ``'unsafe-inline'``, the policy lists the hash of
    each inline block of this very page: nothing injected into it could run.
    """
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(hashes[b"script"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts};"
        f" style-src {' '.join(hashes[b'style'])} data:; img-src data:; font-src data:;"
        " connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'"
    )


def _no_store(error: StoreError) -> Response:
    return _plain(
        503,
        f"flamewatch's store cannot be read yet ({error}). It is written shortly after the"
        " app's first requests; reload in a few seconds.",
    )


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")
