"""How a value that came from a request is shown: bounded, visible, escaped for its medium.

Everything the report shows of a request -- endpoint, rule, user or group, version label, host,
params, headers, function names -- is data someone else chose. Three rules follow:

* **bounded**: a value longer than its place allows is cut, with a mark saying how long it was
  and a short digest (so two long values that start alike still differ), so that a page's size
  depends on how much it lists, never on how long the stored strings are (:func:`shorten`);
* **visible**: control characters and Unicode direction overrides are shown as ``\\x00`` or
  ``\\u202e`` rather than acting on the text around them (:func:`visible`);
* **escaped**: jinja escapes HTML (autoescaping, see :mod:`.site`); plotly reads its own subset
  of HTML in every text it draws -- ``<b>``, ``<br>``, ``<a href>``, ``<span style>`` and
  ``&entities;`` in tick labels, legends, hover text and titles -- so a chart's text goes
  through :func:`plotly_text`. (plotly would also typeset ``$...$`` as LaTeX, but only with
  MathJax on the page, which the report never loads.)
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

__all__ = [
    "CHART_LIMIT",
    "JSON_LIMIT",
    "LIMIT",
    "bounded_json",
    "plotly_text",
    "shorten",
    "shown",
    "visible",
]

#: the longest value shown in a page's text (a table cell, a heading, an attribute)
LIMIT = 160
#: the longest label in a chart (an axis tick, a legend entry, a frame of a flamegraph)
CHART_LIMIT = 80
#: the longest string shown inside an outlier's params, headers or body
STRING_LIMIT = 2000
#: the most items of one list or mapping shown in an outlier's params, headers or body
ITEMS_LIMIT = 100
#: the longest text of one of an outlier's params, headers or body, pretty-printed
JSON_LIMIT = 64_000

_MAX_DEPTH = 20
# C0 and C1 controls, DEL, the bidirectional marks, embeddings, overrides and isolates, the
# line and paragraph separators, and lone surrogates (which UTF-8 cannot even write)
_BEYOND_ASCII = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_INVISIBLE_CHARS = re.compile(f"[\x00-\x1f{_BEYOND_ASCII}\ud800-\udfff]")
_INVISIBLE_IN_JSON = re.compile(f"[{_BEYOND_ASCII}]")  # orjson escapes the C0 controls


def shorten(value: str, limit: int = LIMIT) -> str:
    """``value`` when it has at most ``limit`` characters; else its start and a mark, together
    ``limit`` characters long: ``start… (1,048,576 characters, #1a2b3c4d)``. Idempotent."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    mark = f"\u2026 ({len(value):,} characters, #{digest})"
    return value[: max(limit - len(mark), 1)] + mark


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: str) -> str:
    """``value`` with every control, direction-override and separator character written out
    as an escape (``\\x00``, ``\\u202e``): shown, never acting on the text around it."""
    return _INVISIBLE_CHARS.sub(_escape_char, value)


def shown(value: str, limit: int = LIMIT) -> str:
    """``value`` as a page shows it: :func:`shorten`, then :func:`visible` (not yet escaped)."""
    return visible(shorten(value, limit))


def plotly_text(value: str, limit: int = CHART_LIMIT) -> str:
    """``value`` for a text plotly draws: shown, and its ``&``, ``<`` and ``>`` escaped as
    entities -- plotly splits a text at ``<tags>`` first and decodes entities in what is
    left, so the value is drawn literally, never as markup."""
    text = shown(value, limit)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def bounded_json(value: Any) -> str:
    """``value`` (an outlier's params, headers or body, as stored) pretty-printed and bounded:
    each string cut at :data:`STRING_LIMIT`, each list and mapping at :data:`ITEMS_LIMIT`
    items, the whole at :data:`JSON_LIMIT` characters, each cut marked."""
    text = orjson.dumps(_bounded(value, 0), option=orjson.OPT_INDENT_2).decode()
    # orjson writes the C0 controls as escapes already, and the indentation's newlines stay
    text = _INVISIBLE_IN_JSON.sub(_escape_char, text)
    if len(text) > JSON_LIMIT:
        text = text[:JSON_LIMIT] + f"\n\u2026 ({len(text) - JSON_LIMIT:,} more characters)"
    return text


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return shorten(value, STRING_LIMIT)
    if depth >= _MAX_DEPTH and isinstance(value, dict | list | tuple):
        return "\u2026 (nested too deep to show)"
    if isinstance(value, dict):
        items = list(value.items())
        shown_items = {
            shorten(str(k), LIMIT): _bounded(v, depth + 1) for k, v in items[:ITEMS_LIMIT]
        }
        if len(items) > ITEMS_LIMIT:
            shown_items["\u2026"] = f"{len(items) - ITEMS_LIMIT:,} more entries"
        return shown_items
    if isinstance(value, list | tuple):
        kept = [_bounded(v, depth + 1) for v in value[:ITEMS_LIMIT]]
        if len(value) > ITEMS_LIMIT:
            kept.append(f"\u2026 {len(value) - ITEMS_LIMIT:,} more items")
        return kept
    return value
