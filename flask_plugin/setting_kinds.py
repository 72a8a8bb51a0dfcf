"""The kinds of value a flamewatch setting accepts: how each is parsed and how it is described.

A kind holds a setting's type and bounds once. From it come both the parsing at ``init_app``
and the words ``accepts`` that the error message and docs/configuration.md use, so the bounds a
user reads are the bounds that are checked. Parsing raises ValueError or TypeError; the loader
(:mod:`.config`) turns that into a ConfigError naming the key. An exception's text, when it has
one, says what exactly is wrong and is added to the message.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from flamewatch.sampler.redact import Redactor
from flamewatch.sampler.store import is_postgres, resolve_database
from flamewatch.sampler.store.connection import safe_url

from .password_hash import check_password_setting

#: the config keys' prefix: ``FLAMEWATCH_`` + the setting's name in capitals
PREFIX = "FLAMEWATCH_"

T = TypeVar("T")

DECLARATION = "flamewatch.setting"  # the key of a Settings field's declaration in its metadata
T_co = TypeVar("T_co", covariant=True)

#: the store's file, in the instance folder, when ``database`` is not set
DEFAULT_DATABASE_FILE = "flamewatch.sqlite3"


@dataclass(frozen=True)
class Declaration:
    """Everything said about one setting but its name and type (the field's)."""

    default: Any  # the raw value used when the setting is not given, parsed like a given one
    kind: Kind[Any]
    help: str
    default_help: str | None  # the default in words, when its raw value does not say it
    secret: bool  # never shown: not in repr, not in an error message


def setting(
    default: Any,
    kind: Kind[T],
    help: str,
    *,
    default_help: str | None = None,
    secret: bool = False,
    repr: bool = True,
) -> T:
    """Declare a field of :class:`Settings` as a setting. Typed as the kind's value so that
    mypy checks the field's annotation against what the kind parses. ``repr=False`` keeps a
    value out of log lines without hiding it from error messages (a store URL, shown there
    without its password); ``secret=True`` hides it from both."""
    declared = Declaration(default, kind, help, default_help, secret)
    field = dataclasses.field(repr=repr and not secret, metadata={DECLARATION: declared})
    return cast("T", field)


@dataclass(frozen=True)
class Option:
    """One declared setting: its name (the keyword argument) and its declaration."""

    name: str
    declared: Declaration

    @property
    def key(self) -> str:
        """The setting's key in ``app.config``."""
        return PREFIX + self.name.upper()

    @property
    def default(self) -> Any:
        return self.declared.default

    @property
    def accepts(self) -> str:
        """What the setting accepts, in the words of the error message and the docs."""
        return self.declared.kind.accepts

    @property
    def help(self) -> str:
        return self.declared.help


@dataclass(frozen=True)
class LoadContext:
    """What a kind may need besides the value: the app's instance folder (relative store paths
    are taken from it) and the settings parsed so far (one bound may name another setting)."""

    instance_path: str
    loaded: Mapping[str, Any]


class Kind(Generic[T_co]):
    """A kind of value: what it accepts, in words, and how a raw value becomes one."""

    @property
    def accepts(self) -> str:
        raise NotImplementedError

    def parse(self, value: Any, context: LoadContext) -> T_co:
        raise NotImplementedError

    def show(self, value: Any) -> str:
        """A rejected value as the error message shows it."""
        return repr(value)


def _figure(number: float) -> str:
    """A bound as people write it: 0.01, 1000, 36,500 (digits grouped from five on)."""
    if not float(number).is_integer():
        return repr(float(number))
    return f"{int(number):,}" if abs(number) >= 10_000 else str(int(number))


@dataclass(frozen=True)
class Number(Kind[float]):
    """A finite number (not a boolean) from ``low`` to ``high``, or from ``low`` up."""

    low: float
    high: float | None = None
    unit: str = ""  # "seconds": the docs and messages say "a number of seconds"

    @property
    def accepts(self) -> str:
        what = f"a number of {self.unit}" if self.unit else "a number"
        if self.high is None:
            return f"{what} >= {_figure(self.low)}"
        return f"{what} from {_figure(self.low)} to {_figure(self.high)}"

    def parse(self, value: Any, context: LoadContext) -> float:
        if isinstance(value, bool):
            raise ValueError("")
        number = float(value)
        high = math.inf if self.high is None else self.high
        if not (math.isfinite(number) and self.low <= number <= high):
            raise ValueError("")
        return number


@dataclass(frozen=True)
class Integer(Kind[int]):
    """A whole number (not a boolean) from ``low`` to ``high``; ``low`` may name a setting
    declared before this one, whose value is then the bound."""

    low: int | str
    high: int | None = None

    @property
    def accepts(self) -> str:
        if isinstance(self.low, str):  # "from outlier_warmup to ..." would read as a range
            most = "" if self.high is None else f" and <= {_figure(self.high)}"
            return f"an integer >= {self.low}{most}"
        if self.high is None:
            return f"an integer >= {_figure(self.low)}"
        return f"an integer from {_figure(self.low)} to {_figure(self.high)}"

    def parse(self, value: Any, context: LoadContext) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("")
        number = int(value)
        low = context.loaded[self.low] if isinstance(self.low, str) else self.low
        if number < low or (self.high is not None and number > self.high):
            raise ValueError("")
        return number


@dataclass(frozen=True)
class OrNone(Kind["T | None"], Generic[T]):
    """Another kind, or None (also written "" or "none", as from an environment variable)."""

    kind: Kind[T]

    @property
    def accepts(self) -> str:
        return f"{self.kind.accepts}, or None"

    def parse(self, value: Any, context: LoadContext) -> T | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return self.kind.parse(value, context)


@dataclass(frozen=True)
class Parsed(Kind[T]):
    """A kind checked by one function of the value, described in words."""

    words: str
    function: Callable[[Any], T]

    @property
    def accepts(self) -> str:
        return self.words

    def parse(self, value: Any, context: LoadContext) -> T:
        return self.function(value)


@dataclass(frozen=True)
class Database(Kind[str]):
    """Where the store lives, as a URL; a SQLite file must be one the writer can use."""

    @property
    def accepts(self) -> str:
        return "a file path, a sqlite:///… URL or a postgresql://… URL"

    def parse(self, value: Any, context: LoadContext) -> str:
        if value is None:
            value = DEFAULT_DATABASE_FILE
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError("")
        if "\x00" in os.fspath(value):
            raise ValueError("it contains a NUL character")
        url = resolve_database(value, context.instance_path)
        if not is_postgres(url):
            _check_sqlite_file(Path(url.removeprefix("sqlite:///")), Path(context.instance_path))
        return url

    def show(self, value: Any) -> str:
        return repr(safe_url(value)) if isinstance(value, str) else repr(value)


def _check_sqlite_file(path: Path, instance_path: Path) -> None:
    """Refuse at init_app a SQLite path the writer thread could never use (it would fail
    later, on a request, where the error is only logged)."""
    if path.is_dir():
        raise ValueError(
            f"it is a directory; name a file in it, e.g. {path / DEFAULT_DATABASE_FILE}"
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


# -- the functions behind Parsed kinds ---------------------------------------------------------


def boolean(value: Any) -> bool:
    """True/False, 1/0, or the words an environment variable uses (yes/no, on/off...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("")


def optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError("")
    return value.strip()


def git_path(value: Any) -> Path | None:
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


def importable_callable(value: Any) -> Callable[[Any], Any] | None:
    """A callable, or the 'module:function' path of one (as from an environment variable)."""
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


def patterns(value: Any) -> tuple[str, ...]:
    """A list of strings, or one comma-separated string; empty items are dropped."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise TypeError("")
    if not all(isinstance(item, str) for item in items):
        raise TypeError("")
    return tuple(item for item in items if item)


def redact_keys(value: Any) -> tuple[str, ...]:
    keys = patterns(value)
    Redactor(keys)  # refuses keys that would match everything
    return keys


def url_prefix(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("")
    prefix = value.strip().rstrip("/")
    if not prefix.startswith("/") or any(c in prefix for c in "<>?#% \t\n"):
        raise ValueError("")
    return prefix


def password(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError("")
    check_password_setting(value)  # a damaged hash must not become a plain password
    return value  # as given: spaces are part of a plain password


#: the shortest CSRF key: 16 characters
MIN_SECRET_CHARS = 16


def secret_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        raise ValueError("")
    return value


#: a bearer token's shortest length: 16 random characters are beyond guessing at any rate
MIN_TOKEN_CHARS = 16


def bearer_token(value: Any) -> str | None:
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
