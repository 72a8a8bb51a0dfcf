"""flamewatch's settings, each declared once: name, type, default, bounds and documentation.

Each setting is a field of :class:`Settings` declared with :func:`setting`: the field's name is
the keyword argument (its config key is ``FLAMEWATCH_`` + the name in capitals), its annotation
the type, and the declaration holds the default, the kind of value (:mod:`.setting_kinds`: its
bounds, and the words that describe them) and the documentation. :data:`OPTIONS`, the loader
:func:`load_settings` with its error messages, and docs/configuration.md
(``python -m flamewatch.flask_plugin.config_docs``) are all derived from these fields.

A setting is read from the keyword arguments given to :class:`~.Flamewatch` (which win), then
from ``app.config["FLAMEWATCH_<NAME>"]``, then falls back to its default. Every value is
checked once, at ``init_app``; a bad one raises :class:`ConfigError` naming the key and what it
accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Any

from flamewatch.sampler import OutlierRule
from flamewatch.sampler.storable import DEFAULT_HISTOGRAM_GROUPS, MIN_NAME_CHARS, Limits

from . import setting_kinds as kinds
from .setting_kinds import (
    DECLARATION,
    DEFAULT_DATABASE_FILE,
    MIN_SECRET_CHARS,
    MIN_TOKEN_CHARS,
    PREFIX,
    Database,
    Integer,
    LoadContext,
    Number,
    Option,
    OrNone,
    Parsed,
    setting,
)

__all__ = [
    "DEFAULT_CAPTURE_HEADERS",
    "OPTIONS",
    "PREFIX",
    "ConfigError",
    "Option",
    "Settings",
    "check_option_names",
    "load_settings",
]

DEFAULT_CAPTURE_HEADERS = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Length",
    "Content-Type",
    "Host",
    "Origin",
    "Referer",
    "User-Agent",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "X-Request-ID",
)

GroupBy = Callable[[Any], "str | int | None"]

_DEFAULT_RULE = OutlierRule()  # the outlier rule's defaults live with the rule
_STATIC = ("static", "*.static", "flamewatch", "flamewatch.*")

BOOLEAN = Parsed("a boolean", kinds.boolean)
PATTERN_LIST = "(or a comma-separated string)"


class ConfigError(ValueError):
    """A flamewatch setting has a value it does not accept."""


@dataclass(frozen=True)
class Settings:
    """Validated settings of flamewatch on one app, in the order the docs list them."""

    enabled: bool = setting(
        True, BOOLEAN, "Record requests. When false, flamewatch installs nothing on the app."
    )
    database: str = setting(
        None,
        Database(),
        "Where the store lives. Relative paths are taken from the app's instance folder (created"
        " if missing); a file's folder outside it must exist, and a directory, a device or a"
        " folder this process cannot write is a `ConfigError`. `sqlite:///rel/path` is relative,"
        " `sqlite:////abs/path` absolute. `postgresql://user:password@host:5432/dbname` (also"
        " `postgres://`, and libpq's query parameters such as `?sslmode=require`) is a PostgreSQL"
        " store shared by every worker and server; it needs `pip install 'flamewatch[postgres]'`"
        " (psycopg 3), else `init_app` says so.",
        default_help=f"`{DEFAULT_DATABASE_FILE}` in the instance folder",
        repr=False,  # a store URL may hold a password
    )
    version: str | None = setting(
        None,
        Parsed("a non-empty string", kinds.optional_text),
        "The version label of the deployed code: the git commit (12 hex digits) read from the"
        " `.git` files, then a CI/platform variable such as `GITHUB_SHA` or `SOURCE_VERSION`,"
        " then `unknown`. Detected once, at start.",
        default_help="detected",
    )
    git: Path | None = setting(
        None,
        Parsed("an existing directory or `.git` file", kinds.git_path),
        "Where to look for the git repository. An empty value is a `ConfigError` (leave it"
        " unset instead).",
        default_help="upward from the app's root path",
    )
    group_by: GroupBy | None = setting(
        None,
        Parsed(
            "a callable request -> str | int | None, or its import path 'module:function'",
            kinds.importable_callable,
        ),
        "The user or group of a request, called after the view inside the request context."
        " When it returns None (or raises, which is logged): the client address.",
        default_help="the client address",
    )
    exclude: tuple[str, ...] = setting(
        (),
        Parsed(f"a list of endpoint names or fnmatch patterns {PATTERN_LIST}", kinds.patterns),
        "Endpoints never monitored, besides `static`, `*.static` and flamewatch's own. Every"
        " other endpoint is monitored unless switched off in the store (the dashboard's"
        " *Monitoring* page).",
    )
    outlier_k: float = setting(
        _DEFAULT_RULE.k,
        Number(0),
        "`k` in the outlier rule: after the warm-up, a request is an outlier when its duration"
        " exceeds `max(mean + k * stddev, factor * mean, min_ms)` of its endpoint and version.",
    )
    outlier_factor: float = setting(
        _DEFAULT_RULE.factor, Number(1), "`factor` in the outlier rule."
    )
    outlier_min_ms: float = setting(
        _DEFAULT_RULE.min_ms,
        Number(0),
        "`min_ms` in the outlier rule: faster requests are never outliers.",
    )
    outlier_warmup: int = setting(
        _DEFAULT_RULE.warmup,
        Integer(2, 30),
        "Requests of a new endpoint seen before any can be an outlier (a new version of a known"
        " endpoint starts from the previous version's statistics instead).",
    )
    outlier_window: int = setting(
        _DEFAULT_RULE.window,
        Integer("outlier_warmup", 10**9),
        "The statistics weigh about this many recent requests (exponential forgetting).",
    )
    sampler: bool = setting(
        True,
        BOOLEAN,
        "Sample in-flight requests' stacks so that outliers keep a profile. When false,"
        " outliers keep their facts, CPU and memory but no profile.",
    )
    sample_interval_ms: float = setting(
        10.0,
        Number(1, 1000, "milliseconds"),
        "How often an in-flight request's stack is sampled until it passes its threshold.",
    )
    outlier_sample_interval_ms: float = setting(
        1.0,
        Number(0.1, 100, "milliseconds"),
        "How often it is sampled once it has passed its threshold.",
    )
    max_samples: int = setting(
        2000,
        Integer(10, 100_000),
        "Samples kept per request; when full, every other sample is merged into the next and"
        " the interval doubles, so a long request stays covered end to end.",
    )
    aggregate_profiles: bool = setting(
        True,
        BOOLEAN,
        "Fold the sampled stacks of every request into per-version profiles of each endpoint"
        " and group, for the report's flamegraphs and version diffs. Needs the sampler.",
    )
    aggregate_max_stacks: int = setting(
        500,
        Integer(10, 100_000),
        "Distinct stacks kept per endpoint, group and process; a stack first seen once this"
        " many are kept is charged to its deepest kept ancestor.",
    )
    aggregate_max_groups: int = setting(
        20,
        Integer(0, 10_000),
        "Users or groups with an aggregated profile of their own, per endpoint and process"
        " (the first seen); later ones share `[other groups]`.",
    )
    aggregate_flush_interval: float = setting(
        10.0,
        Number(0.01, 3600, "seconds"),
        "How often the writer adds the folded stacks to the store (also on a flush and at exit).",
    )
    profiles_per_hour: int = setting(
        20,
        Integer(0, 100_000),
        "Outliers captured per endpoint per hour in each process (each process runs one"
        " version). Later outliers are flagged and timed but not captured, and sampled at the"
        " low rate only, for the aggregated profiles (not at all when those are off).",
    )
    max_profile_kb: int = setting(
        1024,
        Integer(16, 65_536),
        "Largest compressed profile stored; a larger one is thinned until it fits (noted with"
        " the outlier).",
    )
    max_body_kb: int = setting(
        64,
        Integer(0, 65_536),
        "Largest request body (form or JSON) read for an outlier's params.",
    )
    max_name_chars: int = setting(
        256,
        Integer(MIN_NAME_CHARS, 600),
        "Longest endpoint, rule, group, method, client address or version label stored; a"
        " longer one is cut to it, ending in `…[+N chars]`. Surrogates and NUL are replaced by"
        " U+FFFD (see [limits.md](limits.md)).",
    )
    max_capture_kb: int = setting(
        64,
        Integer(1, 16_384),
        "Largest request facts (params, headers, path, file names) stored with one outlier, as"
        " JSON; over it the bulkiest are replaced by a note of their size.",
    )
    capture_headers: tuple[str, ...] = setting(
        DEFAULT_CAPTURE_HEADERS,
        Parsed(f"a list of header names {PATTERN_LIST}", kinds.patterns),
        "Request headers kept with an outlier. `Authorization`, `Proxy-Authorization`,"
        " `Cookie` and `Set-Cookie` never are, even when listed.",
    )
    redact: tuple[str, ...] = setting(
        (),
        Parsed(f"a list of key fragments {PATTERN_LIST}", kinds.redact_keys),
        "More keys whose values are redacted from an outlier's params and headers, besides the"
        " built-in list (see [redaction.md](redaction.md)).",
    )
    queue_size: int = setting(
        50_000,
        Integer(100, 10_000_000),
        "Records waiting for the writer; beyond it records are dropped and counted (never"
        " blocking a request).",
    )
    flush_interval: float = setting(
        1.0,
        Number(0.01, 60, "seconds"),
        "How often the writer thread writes what is queued.",
    )
    # -- the live dashboard ------------------------------------------------------------------
    dashboard: bool = setting(
        True,
        BOOLEAN,
        "Serve the live dashboard (the report's pages, endpoint selection, profile downloads)"
        " under `url_prefix`.",
    )
    url_prefix: str = setting(
        "/flamewatch",
        Parsed("a URL path starting with /", kinds.url_prefix),
        "Where the live dashboard is served.",
    )
    username: str | None = setting(
        None,
        Parsed("a non-empty string", kinds.optional_text),
        "User name of the dashboard's HTTP Basic authentication; set together with `password`"
        " (one without the other is a `ConfigError`).",
    )
    password: str | None = setting(
        None,
        Parsed(
            "a non-empty string: the password, or a werkzeug password hash (scrypt:… or pbkdf2:…)",
            kinds.password,
        ),
        "Password of the dashboard's HTTP Basic authentication; a hash comes from"
        " `werkzeug.security.generate_password_hash`.",
        default_help="none (there is no default password)",
        secret=True,
    )
    authorize: Callable[[Any], Any] | None = setting(
        None,
        Parsed(
            "a callable request -> bool, or its import path 'module:function'",
            kinds.importable_callable,
        ),
        "Lets the app's own login decide who may use the dashboard; called in the request"
        " context. Returning a string names the user (CSRF tokens are then per user).",
    )
    secret_key: str | None = setting(
        None,
        Parsed(f"a string of at least {MIN_SECRET_CHARS} characters", kinds.secret_key),
        "Key of the dashboard's CSRF tokens. Set it (or `app.secret_key`) when several"
        " processes serve the dashboard, or a form served by one is refused by another.",
        default_help="derived from `app.secret_key`, else random per process",
        secret=True,
    )
    metrics_token: str | None = setting(
        None,
        Parsed(
            f"a string of at least {MIN_TOKEN_CHARS} visible ASCII characters (no spaces)",
            kinds.bearer_token,
        ),
        "A bearer token with which a scraper such as Prometheus may read `<url_prefix>/metrics`"
        " (and nothing else), besides the dashboard's own login. Compared in constant time,"
        " never logged. See [metrics.md](metrics.md).",
        secret=True,
    )
    dashboard_cache_s: float = setting(
        5.0,
        Number(0, 300, "seconds"),
        "How long the dashboard reuses what it read from the store (per process), and at least"
        " ten times as long as reading it took, so a busy dashboard does not load the app"
        " (reading a big store takes seconds). `0` reads the store for every page.",
    )
    histogram_groups: int = setting(
        DEFAULT_HISTOGRAM_GROUPS,
        Integer(0, 10_000),
        "Users or groups with latency histograms of their own per endpoint and version: the"
        " first seen by each process (seeded from those the store already holds); the requests"
        " of later ones are counted together as *others*. Processes that meet a new version at"
        " the same time admit their own, so N processes may admit up to N times this many (see"
        " [store.md](store.md)).",
    )
    # -- retention ---------------------------------------------------------------------------
    retention_days: float | None = setting(
        None,
        OrNone(Number(0.01, 36_500, "days")),
        "Delete requests and their outliers older than this, hourly, in batches of 5,000 rows"
        " per transaction, by one process at a time. The latency histograms are kept (see"
        " `histogram_retention_days`).",
        default_help="`None` (keep everything)",
    )
    histogram_retention_days: float | None = setting(
        None,
        OrNone(Number(0.01, 36_500, "days")),
        "Delete the hourly and daily latency histograms and traffic counts older than this"
        " (whole UTC days), and the histograms of versions last seen before then, hourly, by"
        " one process at a time. The cumulative histograms behind the metrics are never"
        " deleted.",
        default_help="`None` (keep forever)",
    )

    @cached_property
    def outlier(self) -> OutlierRule:
        """The outlier rule the five ``outlier_*`` settings make."""
        return OutlierRule(
            k=self.outlier_k,
            factor=self.outlier_factor,
            min_ms=self.outlier_min_ms,
            warmup=self.outlier_warmup,
            window=self.outlier_window,
        )

    @property
    def limits(self) -> Limits:
        """The caps the store applies to what it writes."""
        return Limits(
            name_chars=self.max_name_chars,
            capture_bytes=self.max_capture_kb * 1024,
            histogram_groups=self.histogram_groups,
        )

    def is_excluded(self, endpoint: str) -> bool:
        return any(fnmatchcase(endpoint, pattern) for pattern in (*_STATIC, *self.exclude))


OPTIONS: tuple[Option, ...] = tuple(
    Option(field.name, field.metadata[DECLARATION]) for field in dataclasses.fields(Settings)
)
_BY_NAME = {option.name: option for option in OPTIONS}


def check_option_names(options: Mapping[str, Any]) -> None:
    """Refuse unknown keyword arguments, suggesting the closest known one."""
    for name in options:
        if name not in _BY_NAME:
            raise TypeError(f"Flamewatch() got an unknown option {name!r}{_suggest(name, False)}")


def load_settings(
    config: Mapping[str, Any], options: Mapping[str, Any], instance_path: str
) -> Settings:
    """Read and check every setting, in the order declared; raise :class:`ConfigError` on the
    first bad one."""
    check_option_names(options)
    for key in config:
        if key.startswith(PREFIX) and key[len(PREFIX) :].lower() not in _BY_NAME:
            raise ConfigError(f"unknown setting {key}{_suggest(key, True)}")
    loaded: dict[str, Any] = {}
    context = LoadContext(instance_path, loaded)
    for option in OPTIONS:
        if option.name in options:
            where, value = f"{option.name} (keyword argument)", options[option.name]
        else:
            where, value = option.key, config.get(option.key, option.default)
        try:
            loaded[option.name] = option.declared.kind.parse(value, context)
        except (ValueError, TypeError) as exc:
            raise ConfigError(_refusal(option, where, value, exc)) from None
    _check_credentials(loaded)
    settings = Settings(**loaded)
    try:
        settings.outlier  # noqa: B018 - builds the rule now, to refuse it at init_app
    except ValueError as exc:  # pragma: no cover - every field is checked above
        raise ConfigError(str(exc)) from None
    return settings


def _refusal(option: Option, where: str, value: Any, exc: Exception) -> str:
    """The error message: the key, what it accepts, the value given (unless it is a secret)
    and what exactly is wrong with it, when the kind said."""
    detail = f" ({exc})" if str(exc) else ""
    if option.declared.secret and value:
        shown = "a value not shown"
    else:
        shown = option.declared.kind.show(value)
    return f"{where} must be {option.accepts}; got {shown}{detail}"


def _check_credentials(loaded: Mapping[str, Any]) -> None:
    """The dashboard's HTTP Basic authentication needs both a user name and a password."""
    if (loaded["username"] is None) != (loaded["password"] is None):
        given, missing = (
            ("USERNAME", "PASSWORD") if loaded["password"] is None else ("PASSWORD", "USERNAME")
        )
        raise ConfigError(
            f"{PREFIX}{given} is set but {PREFIX}{missing} is not: set both for the dashboard's"
            f" HTTP Basic authentication (or neither, and use {PREFIX}AUTHORIZE)"
        )


def _suggest(name: str, as_key: bool) -> str:
    known = [option.key if as_key else option.name for option in OPTIONS]
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"
