"""Store URLs: a database setting checked and normalised, and URLs made safe to show.

A store is named by a SQLite file path, a ``sqlite:///`` URL or a ``postgresql://`` URL
(:func:`resolve_database`). What logs, messages and pages show of a URL never holds its
password (:func:`safe_url`, :func:`scrub_secrets`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from .base import StoreError

__all__ = [
    "POSTGRES_INSTALL",
    "is_postgres",
    "resolve_database",
    "safe_url",
    "scrub_secrets",
    "sqlite_file",
]

# user:password@ after the scheme; the password may hold '/', ':' or '@' that were not
# percent-encoded (libpq takes the last '@' before the host)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^?#]*@(?=[^@]*$)")
# password=, sslpassword= and what a typo makes of them (pasword=, passwd=, pw=)
_QUERY_SECRET = re.compile(r"(?i)([?&][a-z_]*(?:pas+w|pw|secret|token)[a-z_]*=)[^&#]*")

_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
POSTGRES_INSTALL = "pip install 'flamewatch[postgres]'"


def is_postgres(url: str) -> bool:
    """Whether a database setting or store URL names a PostgreSQL database."""
    return url.strip().lower().startswith(_POSTGRES_SCHEMES)


def _postgres_url(text: str) -> str:
    """A ``postgresql://`` URL checked by psycopg's own parser (which must be installed)."""
    try:
        # optional (flamewatch[postgres]): imported where used
        import psycopg  # noqa: PLC0415 -- optional (flamewatch[postgres])
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 -- optional
    except ImportError:
        raise ValueError(
            f"a PostgreSQL store needs psycopg 3, which is not installed: {POSTGRES_INSTALL}"
        ) from None
    url = "postgresql://" + text.split("://", 1)[1]
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:  # with libpq's own words, which may quote the password
        raise ValueError(f"not a valid PostgreSQL URL: {scrub_secrets(str(exc), url)}") from None
    return url


def resolve_database(value: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> str:
    """Normalise a database setting to a store URL.

    Accepts a filesystem path, a ``sqlite:///relative`` / ``sqlite:////absolute`` URL
    (relative paths are taken from ``base_dir``) or a ``postgresql://`` URL (also
    ``postgres://``). Raises :class:`ValueError` saying what is accepted.
    """
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("it is empty; give a file path or a sqlite:///… URL")
    lowered = text.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        return _postgres_url(text)
    if lowered.startswith("sqlite:"):
        if not lowered.startswith("sqlite:///"):
            raise ValueError(f"{text!r} is not a SQLite URL of the form sqlite:///path/to/file")
        text = text[len("sqlite:///") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(
            f"the scheme {scheme!r} is not supported; give a file path, a sqlite:///… URL"
            " or a postgresql://… URL"
        )
    if text in ("", ":memory:") or text.startswith("file::memory:"):
        raise ValueError(
            "an in-memory database cannot be shared with flamewatch's writer thread or with"
            " the report; give a file path"
        )
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    return f"sqlite:///{path}"


def safe_url(url: str) -> str:
    """A store URL without its password (in the user part or a ``password=`` query
    parameter), for messages, logs and pages."""
    if "@" in url.split("?", 1)[0]:
        url = _USERINFO.sub(r"\1:***@", url, count=1)
    return _QUERY_SECRET.sub(r"\1***", url)


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the URL's secrets masked: libpq quotes
    the token it could not parse, which may be the password."""
    secrets: list[str] = []
    found = _USERINFO.match(url)
    if found is not None:
        secrets.append(url[len(found.group(1)) + 1 : found.end() - 1])
    secrets += [url[m.end(1) : m.end()] for m in _QUERY_SECRET.finditer(url)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
        decoded = unquote(secret)
        if decoded != secret:
            text = text.replace(decoded, "***")
    return safe_url(text)


def sqlite_file(database: str) -> Path:
    """The file of a ``sqlite:///`` URL or a plain path."""
    text = database[len("sqlite:///") :] if database.startswith("sqlite:///") else database
    if "://" in text:
        raise StoreError(
            f"{database!r}: give a SQLite file path, a sqlite:///… or a postgresql://… URL"
        )
    return Path(text)
