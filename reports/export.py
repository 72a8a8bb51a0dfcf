"""Exporting a stored pyinstrument session as a file other tools open.

Three formats:

``pyisession``
    pyinstrument's own JSON, as ``Session.save`` writes it; ``Session.load`` and
    ``pyinstrument --load FILE`` read it back.
``speedscope``
    A "sampled" profile in speedscope's file format (https://www.speedscope.app), written by
    :func:`.speedscope.speedscope_file` from ``session.frame_records``: every record becomes
    one sample, weighted by its seconds, so the weights add up to the session's time, and every
    frame is kept.
``html``
    pyinstrument's self-contained interactive page (``HTMLRenderer``), with the whole tree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import orjson
from pyinstrument.renderers import html as renderers_html
from pyinstrument.renderers.html import JSONForHTMLRenderer
from pyinstrument.session import Session

from flamewatch.sampler.frame_ids import parse_frame_identifier

from .speedscope import SpeedscopeFrame, speedscope_file

__all__ = [
    "FORMATS",
    "content_disposition",
    "download_name",
    "export_profile",
    "to_html",
    "to_pyisession",
    "to_speedscope",
]

FORMATS = ("pyisession", "speedscope", "html")

# HTMLRenderer resamples (and prints a note to stderr) above this many records; we resample
# first, the same way, so it never has to.
_HTML_MAX_RECORDS = 100_000

#: the longest file name a download is offered under
_DOWNLOAD_NAME_LIMIT = 120
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")


def download_name(name: str) -> str:
    """``name`` as a file name safe on every filesystem and in a ``Content-Disposition``
    header: letters, digits, ``_``, ``.`` and ``-`` only (any other run becomes ``-``), no
    leading dot, at most :data:`_DOWNLOAD_NAME_LIMIT` characters; never empty."""
    safe = _UNSAFE_IN_FILE_NAMES.sub("-", name).lstrip(".-")[:_DOWNLOAD_NAME_LIMIT]
    return safe or "flamewatch-download"


def content_disposition(disposition: str, name: str) -> str:
    """A ``Content-Disposition`` header value (``inline`` or ``attachment``) offering the file
    as :func:`download_name` of ``name``: nothing in it can end the quoted file name."""
    if disposition not in ("inline", "attachment"):
        raise ValueError(f"disposition must be 'inline' or 'attachment', not {disposition!r}")
    return f'{disposition}; filename="{download_name(name)}"'


def export_profile(session: Session, fmt: str) -> bytes:
    """``session`` in format ``fmt``, one of :data:`FORMATS`."""
    exporters: dict[str, Callable[[Session], bytes]] = {
        "pyisession": to_pyisession,
        "speedscope": to_speedscope,
        "html": to_html,
    }
    exporter = exporters.get(fmt)
    if exporter is None:
        raise ValueError(f"unknown export format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return exporter(session)


def to_pyisession(session: Session) -> bytes:
    """The JSON ``Session.load`` and ``pyinstrument --load`` read."""
    return orjson.dumps(session.to_json())


# -- speedscope ------------------------------------------------------------------------------


def to_speedscope(session: Session, name: str | None = None) -> bytes:
    """A speedscope file holding one sampled profile of ``session``, every frame kept."""
    title = name or session.target_description or "flamewatch profile"
    return speedscope_file(title, "seconds", session.frame_records, _speedscope_frame)


def _speedscope_frame(frame_info: str) -> SpeedscopeFrame:
    """speedscope's frame for a pyinstrument frame info (see
    :mod:`flamewatch.sampler.frame_ids`): ``Class.function`` when a class owns it, the first
    line, or ``None`` for line 0 (pyinstrument's for built-ins); a thread's root becomes a frame
    named after the thread."""
    frame = parse_frame_identifier(frame_info)
    if frame.is_thread:
        return (frame.function or "thread", None, None)
    line = frame.first_line if frame.first_line is not None and frame.first_line > 0 else None
    return (frame.qualified_name, frame.file or None, line)


# -- html ------------------------------------------------------------------------------------


def to_html(session: Session) -> bytes:
    """pyinstrument's interactive page for ``session``: one HTML document, scripts inlined.

    The page is the one ``HTMLRenderer`` writes -- its ``app.js`` and ``app.css`` inlined, the
    whole frame tree as data (no preprocessors: the view options and the timeline are in the
    page) -- built here from the same parts so the data is rendered once and embedded safely:
    ``<`` in it is escaped, so a ``</script>`` in a description or a path stays text.
    """
    data: str = JSONForHTMLRenderer().render(_fit_for_html(session))
    js, css = _html_resources()
    escaped = data.replace("<", "\\u003c")  # JSON has "<" only inside strings: same meaning
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n</head>\n<body>\n'
        f'<div id="app"></div>\n<script>{js}</script>\n<style>{css}</style>\n<script>\n'
        f"const sessionData = {escaped};\n"
        "pyinstrumentHTMLRenderer.render(document.getElementById('app'), sessionData);\n"
        "</script>\n</body>\n</html>\n"
    )
    return page.encode("utf-8")


@functools.cache
def _html_resources() -> tuple[str, str]:
    """The viewer's script and style sheet, as pyinstrument ships them."""
    folder = Path(renderers_html.__file__).parent / "html_resources"
    script = (folder / "app.js").read_text(encoding="utf-8")
    # The viewer adds a stylesheet link to Google Fonts; a report opened from disk must not
    # reach the network, so it gets an empty stylesheet and falls back to the system fonts.
    script = re.sub(r"https://fonts\.googleapis\.com/[^\"'`]*", "data:text/css,", script)
    return script, (folder / "app.css").read_text(encoding="utf-8")


def _fit_for_html(session: Session) -> Session:
    """Resample like HTMLRenderer would for huge sessions, without its message on stderr."""
    if len(session.frame_records) <= _HTML_MAX_RECORDS or session.duration <= 0:
        return session
    interval = session.duration / 10_000
    resampled = session.resample(interval)
    while len(resampled.frame_records) > _HTML_MAX_RECORDS:
        interval *= 2
        resampled = session.resample(interval)
    return resampled
