"""Making what a request brought storable: valid UTF-8, no NUL, of bounded length.

Every string the store keeps came from somewhere an attacker may reach: the endpoint and rule
(the app's, but also what a proxy rewrote), the method and the client address (the request
line, ``X-Forwarded-For``), the group (whatever ``group_by`` returned, often a header), an
outlier's params, headers, path and file names, the version label (an environment variable).
One value that the database refuses -- a lone surrogate (``"\\ud800"``, which has no UTF-8
form), a NUL (which PostgreSQL's ``text`` cannot hold), a name longer than a unique index
takes -- would fail the whole batch it is in. So the store passes each through
:func:`storable` before writing it:

- a surrogate code point becomes U+FFFD (the replacement character), and so does NUL;
- a string longer than its limit is cut, ending in :func:`truncation_mark` (``…[+N chars]``,
  N counting the characters left out), so that the result, mark included, has at most
  ``limit`` characters -- and :func:`storable` of a stored string is the string itself.

The writer calls it only where a string is first seen (a name's id looked up in the store,
then cached) and for outlier captures (rare): the request thread never pays for it.

Control characters, markup, quotes and SQL are stored as they are: parameters carry them to
the database unchanged, and every page that shows them escapes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

__all__ = [
    "DEFAULT_HISTOGRAM_GROUPS",
    "DEFAULT_MAX_CAPTURE_BYTES",
    "DEFAULT_MAX_NAME_CHARS",
    "MIN_NAME_CHARS",
    "PARAM_CHARS",
    "REPLACEMENT",
    "Limits",
    "capture_json",
    "storable",
    "storable_json",
    "truncation_mark",
]

#: what a surrogate or a NUL becomes
REPLACEMENT = "\ufffd"
#: the default cap of a name (endpoint, rule, group, method, client address, version, host)
DEFAULT_MAX_NAME_CHARS = 256
#: the smallest cap a name may have: room for a truncation mark and some of the name
MIN_NAME_CHARS = 32
#: a param's string, at most (the redactor cuts them at 1,024 characters and its mark)
PARAM_CHARS = 2048
#: the default cap of an outlier's stored request facts, as JSON
DEFAULT_MAX_CAPTURE_BYTES = 64 * 1024
#: the default number of groups with latency histograms of their own per endpoint and version
DEFAULT_HISTOGRAM_GROUPS = 50

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# the parts of an outlier's facts given up first, largest first, when they are over the cap
_BULKY = ("json", "form", "query", "headers", "files", "path", "body")


@dataclass(frozen=True)
class Limits:
    """The caps the store applies to what it writes (``max_name_chars``, ``max_capture_kb``,
    ``histogram_groups``)."""

    name_chars: int = DEFAULT_MAX_NAME_CHARS
    capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES
    #: users or groups with latency histograms of their own per endpoint and version (the
    #: first come, per process); the requests of later ones are counted as "others"
    histogram_groups: int = DEFAULT_HISTOGRAM_GROUPS

    def __post_init__(self) -> None:
        if self.name_chars < MIN_NAME_CHARS:
            raise ValueError(f"name_chars must be at least {MIN_NAME_CHARS}")
        if self.capture_bytes < 1024:
            raise ValueError("capture_bytes must be at least 1024")
        if self.histogram_groups < 0:
            raise ValueError("histogram_groups must be at least 0")


def truncation_mark(left_out: int) -> str:
    """What ends a string cut to its limit: ``…[+N chars]``, as the redactor marks its cuts."""
    return f"…[+{left_out} chars]"


def storable(text: str, limit: int) -> str:
    """``text`` as the store can keep it: surrogates and NUL replaced, at most ``limit`` chars.

    The common case -- short ASCII without NUL -- costs three checks and returns ``text``.
    """
    if len(text) <= limit and text.isascii() and "\x00" not in text:
        return text
    return _fit(text, limit, _UNSTORABLE)


def _fit(text: str, limit: int, unstorable: re.Pattern[str]) -> str:
    if len(text) > limit:
        # room for the longest mark this text can need: the result stays within the limit
        keep = limit - len(truncation_mark(len(text)))
        return unstorable.sub(REPLACEMENT, text[:keep]) + truncation_mark(len(text) - keep)
    return unstorable.sub(REPLACEMENT, text)


def _json_string(text: str, limit: int) -> str:
    # in JSON text a NUL is the escape \u0000, which any text column holds; a surrogate
    # has no UTF-8 form, so orjson refuses it
    if len(text) <= limit and text.isascii():
        return text
    return _fit(text, limit, _SURROGATE)


def storable_json(data: object, limit: int) -> object:
    """A JSON-like value whose every string (keys too) is cut at ``limit`` and has its
    surrogates replaced (NUL needs no replacing: JSON escapes it).

    Containers are copied; other values are left to ``orjson`` (the redactor has already
    turned everything else into JSON types).
    """
    if isinstance(data, str):
        return _json_string(data, limit)
    if isinstance(data, Mapping):
        return {
            _json_string(key if isinstance(key, str) else str(key), limit): storable_json(
                value, limit
            )
            for key, value in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [storable_json(item, limit) for item in data]
    return data


def capture_json(request: Mapping[str, object], limits: Limits) -> str:
    """An outlier's request facts as the JSON text the store keeps, at most
    ``limits.capture_bytes`` bytes of UTF-8.

    Strings are made storable (params at :data:`PARAM_CHARS`: the redactor has already cut
    them to its own limit; the facts the writer added at ``limits.name_chars``). Over the
    cap, the bulkiest params are replaced one by one, largest first, by a note saying how
    large they were, until the rest fits.
    """
    facts = {
        _json_string(str(key), limits.name_chars): storable_json(
            value, PARAM_CHARS if key in _BULKY else limits.name_chars
        )
        for key, value in request.items()
    }
    text = orjson.dumps(facts).decode()
    if len(text) <= limits.capture_bytes // 4 or len(text.encode()) <= limits.capture_bytes:
        return text
    sizes = {key: len(orjson.dumps(facts[key])) for key in _BULKY if key in facts}
    for key in sorted(sizes, key=lambda k: -sizes[k]):
        facts[key] = (
            f"[{sizes[key]} bytes, over the {limits.capture_bytes // 1024} KiB limit of an"
            " outlier's stored facts: not stored]"
        )
        text = orjson.dumps(facts).decode()
        if len(text.encode()) <= limits.capture_bytes:
            return text
    # only the writer's own facts are left, and they are capped names: cannot be over
    return text
