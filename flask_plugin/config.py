"""flamewatch's settings: where they come from, what they accept, and their defaults.

Each setting is read from the keyword arguments given to :class:`~.Flamewatch` (which win),
then from ``app.config["FLAMEWATCH_<NAME>"]``, then falls back to its default. Every value is
checked once, at ``init_app``; a bad one raises :class:`ConfigError` naming the key and what it
accepts.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from flamewatch.sampler import OutlierRule
from flamewatch.sampler.redact import Redactor
from flamewatch.sampler.storable import DEFAULT_HISTOGRAM_GROUPS, MIN_NAME_CHARS, Limits
from flamewatch.sampler.store import is_postgres, resolve_database
from flamewatch.sampler.store.connection import safe_url

from .password_hash import check_password_setting

__all__ = [
    "DEFAULT_CAPTURE_HEADERS",
    "OPTIONS",
    "ConfigError",
    "DashboardSettings",
    "Option",
    "Settings",
    "load_settings",
]

PREFIX = "FLAMEWATCH_"

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


class ConfigError(ValueError):
    """A flamewatch setting has a value it does not accept."""


@dataclass(frozen=True)
class Option:
    name: str  # keyword argument; the config key is PREFIX + name.upper()
    default: Any
    accepts: str  # what the error message and the README say it accepts
    help: str

    @property
    def key(self) -> str:
        return PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "enabled",
        True,
        "a boolean",
        "Record requests. When false, flamewatch installs nothing on the app.",
    ),
    Option(
        "database",
        None,
        "a file path, a sqlite:///… URL or a postgresql://… URL",
        "Where the store lives. Relative paths are taken from the app's instance folder."
        " Default: `flamewatch.sqlite3` in the instance folder (created if missing)."
        " A PostgreSQL store needs `pip install 'flamewatch[postgres]'`.",
    ),
    Option(
        "version",
        None,
        "a non-empty string",
        "The version label of the deployed code. Default: the git commit (12 hex digits) read"
        " from the `.git` files, then CI/platform variables such as `GITHUB_SHA` or"
        " `SOURCE_VERSION`, then `unknown`. Detected once, at start.",
    ),
    Option(
        "git",
        None,
        "an existing directory or `.git` file",
        "Where to look for the git repository. Default: upward from the app's root path.",
    ),
    Option(
        "group_by",
        None,
        "a callable request -> str | int | None, or its import path 'module:function'",
        "The user or group a request belongs to (called after the view, inside the request"
        " context). When unset or when it returns None: the client address.",
    ),
    Option(
        "exclude",
        (),
        "a list of endpoint names or fnmatch patterns (or a comma-separated string)",
        "Endpoints never monitored, besides `static`, `*.static` and flamewatch's own."
        " Every other endpoint is monitored unless switched off in the store.",
    ),
    Option(
        "outlier_k",
        3.0,
        "a number >= 0",
        "An outlier is slower than mean + k * stddev of its endpoint (and version)...",
    ),
    Option(
        "outlier_factor",
        2.0,
        "a number >= 1",
        "...and slower than factor * mean...",
    ),
    Option(
        "outlier_min_ms",
        5.0,
        "a number >= 0",
        "...and slower than this many milliseconds.",
    ),
    Option(
        "outlier_warmup",
        30,
        "an integer from 2 to 30",
        "Requests of a new endpoint seen before any can be an outlier (a new version of a known"
        " endpoint starts from the previous version's statistics instead).",
    ),
    Option(
        "outlier_window",
        1000,
        "an integer >= outlier_warmup",
        "The statistics weigh about this many recent requests (exponential forgetting).",
    ),
    Option(
        "sampler",
        True,
        "a boolean",
        "Sample in-flight requests' stacks, so that outliers keep a profile.",
    ),
    Option(
        "sample_interval_ms",
        10.0,
        "a number of milliseconds from 1 to 1000",
        "How often an in-flight request's stack is sampled until it passes its threshold.",
    ),
    Option(
        "outlier_sample_interval_ms",
        1.0,
        "a number of milliseconds from 0.1 to 100",
        "How often it is sampled once it has passed its threshold.",
    ),
    Option(
        "max_samples",
        2000,
        "an integer from 10 to 100,000",
        "Samples kept per request; a longer request keeps every other sample, and so on.",
    ),
    Option(
        "aggregate_profiles",
        True,
        "a boolean",
        "Fold the sampled stacks of every request into per-version profiles of each endpoint"
        " (and group), for the report's flamegraphs and version diffs. Needs the sampler.",
    ),
    Option(
        "aggregate_max_stacks",
        500,
        "an integer from 10 to 100,000",
        "Distinct stacks kept per endpoint, group and process; a stack seen once this many are"
        " kept is charged to its deepest kept ancestor.",
    ),
    Option(
        "aggregate_max_groups",
        20,
        "an integer from 0 to 10,000",
        "Users or groups with an aggregated profile of their own, per endpoint and process"
        " (the first seen); the requests of later ones share one, `[other groups]`.",
    ),
    Option(
        "aggregate_flush_interval",
        10.0,
        "a number of seconds from 0.01 to 3600",
        "How often the writer adds the folded stacks to the store (and at exit, and on flush).",
    ),
    Option(
        "profiles_per_hour",
        20,
        "an integer from 0 to 100,000",
        "Outliers captured per endpoint per hour and process (version); later outliers are"
        " flagged and timed but not captured.",
    ),
    Option(
        "max_profile_kb",
        1024,
        "an integer from 16 to 65,536",
        "Largest compressed profile stored; a larger one is thinned until it fits.",
    ),
    Option(
        "max_body_kb",
        64,
        "an integer from 0 to 65,536",
        "Largest request body (form or JSON) an outlier's facts read.",
    ),
    Option(
        "max_name_chars",
        256,
        f"an integer from {MIN_NAME_CHARS} to 600",
        "Longest endpoint, rule, group, method, client address or version label stored; a"
        " longer one is cut to it, ending in `…[+N chars]` (see docs/limits.md).",
    ),
    Option(
        "max_capture_kb",
        64,
        "an integer from 1 to 16,384",
        "Largest request facts (params, headers, path...) stored with one outlier, as JSON;"
        " over it, the bulkiest are replaced by a note of their size.",
    ),
    Option(
        "capture_headers",
        DEFAULT_CAPTURE_HEADERS,
        "a list of header names (or a comma-separated string)",
        "Request headers kept with an outlier (Authorization and Cookie never are).",
    ),
    Option(
        "redact",
        (),
        "a list of key fragments (or a comma-separated string)",
        "More keys whose values are redacted from an outlier's params and headers, besides"
        " the built-in list.",
    ),
    Option(
        "queue_size",
        50_000,
        "an integer from 100 to 10,000,000",
        "Records waiting for the writer; beyond it records are dropped and counted.",
    ),
    Option(
        "flush_interval",
        1.0,
        "a number of seconds from 0.01 to 60",
        "How often the writer thread writes what is queued.",
    ),
    # -- the live dashboard ---------------------------------------------------------------
    Option(
        "dashboard",
        True,
        "a boolean",
        "Serve the live dashboard (the report's pages, endpoint selection, profile downloads)"
        " under url_prefix.",
    ),
    Option(
        "url_prefix",
        "/flamewatch",
        "a URL path starting with /",
        "Where the live dashboard is served.",
    ),
    Option(
        "username",
        None,
        "a non-empty string",
        "User name of the dashboard's HTTP Basic authentication (set with password).",
    ),
    Option(
        "password",
        None,
        "a non-empty string: the password, or a werkzeug password hash (scrypt:… or pbkdf2:…)",
        "Password of the dashboard's HTTP Basic authentication. There is no default.",
    ),
    Option(
        "authorize",
        None,
        "a callable request -> bool, or its import path 'module:function'",
        "Lets the app's own login decide who may use the dashboard (called in the request"
        " context; a string it returns names the user).",
    ),
    Option(
        "secret_key",
        None,
        "a string of at least 16 characters",
        "Key of the dashboard's CSRF tokens. Default: derived from app.secret_key, else a"
        " random key per process.",
    ),
    Option(
        "metrics_token",
        None,
        "a string of at least 16 visible ASCII characters (no spaces)",
        "Bearer token with which a scraper (Prometheus) may read url_prefix/metrics, besides"
        " the dashboard's own authentication.",
    ),
    Option(
        "dashboard_cache_s",
        5.0,
        "a number of seconds from 0 to 300",
        "How long the dashboard reuses what it read from the store (at least ten times as"
        " long as reading it took); 0 reads it for every page.",
    ),
    Option(
        "histogram_groups",
        DEFAULT_HISTOGRAM_GROUPS,
        "an integer from 0 to 10,000",
        "Users or groups with latency histograms of their own per endpoint and version (the"
        " first seen, per process: N processes may admit up to N times as many); the requests"
        " of later ones are counted together as others.",
    ),
    # -- retention ----------------------------------------------------------------------------
    Option(
        "retention_days",
        None,
        "a number of days from 0.01 to 36,500, or None",
        "Delete requests (and their outliers) older than this many days, hourly, in batches of"
        " 5,000 rows, by one process at a time. Default: keep everything. The latency"
        " histograms are kept (see histogram_retention_days).",
    ),
    Option(
        "histogram_retention_days",
        None,
        "a number of days from 0.01 to 36,500, or None",
        "Delete the hourly latency histograms and traffic counts older than this many days, and"
        " the histograms of versions last seen before then, hourly, by one process at a time."
        " Default: keep them forever. The cumulative histograms behind /metrics are never"
        " deleted.",
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}
_STATIC = ("static", "*.static", "flamewatch", "flamewatch.*")
_SECRETS = ("password", "secret_key", "metrics_token")  # never in an error message


@dataclass(frozen=True)
class DashboardSettings:
    """Validated settings of the live dashboard."""

    enabled: bool
    url_prefix: str
    username: str | None
    password: str | None = field(repr=False)  # never in a log line
    authorize: Callable[[Any], Any] | None
    secret_key: str | None = field(repr=False)
    cache_s: float
    metrics_token: str | None = field(default=None, repr=False)  # never in a log line


@dataclass(frozen=True)
class Settings:
    """Validated settings of flamewatch on one app."""

    enabled: bool
    database: str = field(repr=False)  # a store URL, which may hold a password
    version: str | None
    git: Path | None
    group_by: GroupBy | None
    exclude: tuple[str, ...]
    outlier: OutlierRule
    sampler: bool
    sample_interval_ms: float
    outlier_sample_interval_ms: float
    max_samples: int
    aggregate_profiles: bool
    aggregate_max_stacks: int
    aggregate_max_groups: int
    aggregate_flush_interval: float
    profiles_per_hour: int
    max_profile_kb: int
    max_body_kb: int
    capture_headers: tuple[str, ...]
    redact: tuple[str, ...]
    queue_size: int
    flush_interval: float
    dashboard: DashboardSettings
    retention_days: float | None = None
    max_name_chars: int = 256
    max_capture_kb: int = 64
    histogram_groups: int = DEFAULT_HISTOGRAM_GROUPS
    histogram_retention_days: float | None = None

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


def check_option_names(options: Mapping[str, Any]) -> None:
    """Refuse unknown keyword arguments, suggesting the closest known one."""
    for name in options:
        if name not in _BY_NAME:
            raise TypeError(f"Flamewatch() got an unknown option {name!r}{_suggest(name, False)}")


def load_settings(
    config: Mapping[str, Any], options: Mapping[str, Any], instance_path: str
) -> Settings:
    """Read and check every setting; raise :class:`ConfigError` on the first bad one."""
    check_option_names(options)
    for key in config:
        if key.startswith(PREFIX) and key[len(PREFIX) :].lower() not in _BY_NAME:
            raise ConfigError(f"unknown setting {key}{_suggest(key, True)}")

    def raw(name: str) -> tuple[str, Any]:
        option = _BY_NAME[name]
        if name in options:
            return f"{name}= (keyword argument)", options[name]
        return option.key, config.get(option.key, option.default)

    def get(name: str, parse: Callable[[Any], Any]) -> Any:
        where, value = raw(name)
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            accepts = _BY_NAME[name].accepts
            detail = f" ({exc})" if str(exc) else ""
            if name in _SECRETS and value:
                shown = "a value not shown"
            elif name == "database" and isinstance(value, str):
                shown = repr(safe_url(value))
            else:
                shown = repr(value)
            raise ConfigError(
                f"{where} must be {accepts}; got {shown}{detail}".replace(
                    "= (keyword argument) must", " (keyword argument) must"
                )
            ) from None

    warmup = get("outlier_warmup", _integer(2, 30))
    try:
        outlier = OutlierRule(
            k=get("outlier_k", _number(0, math.inf)),
            factor=get("outlier_factor", _number(1, math.inf)),
            min_ms=get("outlier_min_ms", _number(0, math.inf)),
            warmup=warmup,
            window=get("outlier_window", _integer(warmup, 10**9)),
        )
    except ValueError as exc:  # pragma: no cover - every field is checked above
        raise ConfigError(str(exc)) from None
    return Settings(
        enabled=get("enabled", _boolean),
        database=get("database", lambda v: _database(v, instance_path)),
        version=get("version", _optional_text),
        git=get("git", _git_path),
        group_by=get("group_by", _callable),
        exclude=get("exclude", _patterns),
        outlier=outlier,
        sampler=get("sampler", _boolean),
        sample_interval_ms=get("sample_interval_ms", _number(1, 1000)),
        outlier_sample_interval_ms=get("outlier_sample_interval_ms", _number(0.1, 100)),
        max_samples=get("max_samples", _integer(10, 100_000)),
        aggregate_profiles=get("aggregate_profiles", _boolean),
        aggregate_max_stacks=get("aggregate_max_stacks", _integer(10, 100_000)),
        aggregate_max_groups=get("aggregate_max_groups", _integer(0, 10_000)),
        aggregate_flush_interval=get("aggregate_flush_interval", _number(0.01, 3600)),
        profiles_per_hour=get("profiles_per_hour", _integer(0, 100_000)),
        max_profile_kb=get("max_profile_kb", _integer(16, 65_536)),
        max_body_kb=get("max_body_kb", _integer(0, 65_536)),
        capture_headers=get("capture_headers", _patterns),
        redact=get("redact", _redact_keys),
        queue_size=get("queue_size", _integer(100, 10_000_000)),
        flush_interval=get("flush_interval", _number(0.01, 60)),
        dashboard=_dashboard_settings(get),
        retention_days=get("retention_days", _optional(_number(0.01, 36_500))),
        max_name_chars=get("max_name_chars", _integer(MIN_NAME_CHARS, 600)),
        max_capture_kb=get("max_capture_kb", _integer(1, 16_384)),
        histogram_groups=get("histogram_groups", _integer(0, 10_000)),
        histogram_retention_days=get("histogram_retention_days", _optional(_number(0.01, 36_500))),
    )


def _dashboard_settings(get: Callable[[str, Callable[[Any], Any]], Any]) -> DashboardSettings:
    username = get("username", _optional_text)
    password = get("password", _password)
    if (username is None) != (password is None):
        given, missing = ("USERNAME", "PASSWORD") if password is None else ("PASSWORD", "USERNAME")
        raise ConfigError(
            f"{PREFIX}{given} is set but {PREFIX}{missing} is not: set both for the dashboard's"
            f" HTTP Basic authentication (or neither, and use {PREFIX}AUTHORIZE)"
        )
    return DashboardSettings(
        enabled=get("dashboard", _boolean),
        url_prefix=get("url_prefix", _url_prefix),
        username=username,
        password=password,
        authorize=get("authorize", _callable),
        secret_key=get("secret_key", _secret),
        cache_s=get("dashboard_cache_s", _number(0, 300)),
        metrics_token=get("metrics_token", _token),
    )


def _suggest(name: str, as_key: bool) -> str:
    known = [option.key if as_key else option.name for option in OPTIONS]
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known)}"


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("")


def _number(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("")
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise ValueError("")
        return number

    return parse


def _optional(parse: Callable[[Any], float]) -> Callable[[Any], float | None]:
    def parse_optional(value: Any) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return parse(value)

    return parse_optional


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("")
        number = int(value)
        if not low <= number <= high:
            raise ValueError("")
        return number

    return parse


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError("")
    return value.strip()


def _database(value: Any, instance_path: str) -> str:
    if value is None:
        value = "flamewatch.sqlite3"
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError("")
    if "\x00" in os.fspath(value):
        raise ValueError("it contains a NUL character")
    url = resolve_database(value, instance_path)
    if not is_postgres(url):
        _check_sqlite_file(Path(url.removeprefix("sqlite:///")), Path(instance_path))
    return url


def _check_sqlite_file(path: Path, instance_path: Path) -> None:
    """Refuse at init_app a SQLite path the writer thread could never use (it would fail
    later, on a request, where the error is only logged)."""
    if path.is_dir():
        raise ValueError(
            f"it is a directory; name a file in it, e.g. {path / 'flamewatch.sqlite3'}"
        )
    if path.exists() and not path.is_file():
        raise ValueError("it is not a regular file (a device, pipe or socket?); name a file")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ValueError("this process may not read and write it; fix its permissions")
    folder = path.parent
    if not folder.exists() and not folder.is_relative_to(instance_path):
        raise ValueError(f"its folder {str(folder)!r} does not exist; create it")
    while not folder.exists():  # folders under the instance folder are created by the store
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"{str(folder)!r} is not a folder this process may create files in (SQLite keeps"
            " its -wal and -shm files next to the database); choose another path"
        )


def _git_path(value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError("")
    if not os.fspath(value).strip():
        raise ValueError(
            f"it is empty; leave {PREFIX}GIT unset to search upward from the app's root path,"
            f" or name the repository's directory (set {PREFIX}VERSION to label the code"
            " without git)"
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    return path


def _callable(value: Any) -> GroupBy | None:
    if value is None or callable(value):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, str) or ":" not in value:
        raise TypeError("")
    module_name, _, attribute = value.partition(":")
    try:
        target: Any = importlib.import_module(module_name.strip())
        for part in attribute.strip().split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import it: {exc}") from None
    if not callable(target):
        raise ValueError(f"{value!r} is not callable")
    return target  # type: ignore[no-any-return]


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise TypeError("")
    if not all(isinstance(item, str) for item in items):
        raise TypeError("")
    return tuple(item for item in items if item)


def _url_prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("")
    prefix = value.strip().rstrip("/")
    if not prefix.startswith("/") or any(c in prefix for c in "<>?#% \t\n"):
        raise ValueError("")
    return prefix


def _password(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("")
    check_password_setting(value)  # a damaged hash must not become a plain password
    return value  # as given: spaces are part of a plain password


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 16:
        raise ValueError("")
    return value


#: a bearer token's shortest length: 16 random characters are beyond guessing at any rate
MIN_TOKEN_CHARS = 16


def _token(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("")
    if not all("!" <= c <= "~" for c in value):
        raise ValueError(
            "it holds white space or characters outside visible ASCII (a newline read from a"
            " file?), which an Authorization header cannot carry as they are"
        )
    if len(value) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"it has {len(value)} characters; make a random one, e.g. with python -c"
            " 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _redact_keys(value: Any) -> tuple[str, ...]:
    keys = _patterns(value)
    Redactor(keys)  # refuses keys that would match everything
    return keys
