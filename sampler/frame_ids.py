"""The frame identifier: how a profile names one frame, written and read in this module only.

flamewatch follows pyinstrument's own format, so its renderers and ``pyinstrument --load`` read
the sessions flamewatch builds unchanged::

    function \\x00 filename \\x00 first line [\\x01c<class>] [\\x01l<line>]

The part before the first ``\\x01`` names the function; the attributes after it say which
class owns it and which line was running. pyinstrument groups nodes on that first part, so a
function does not split per line. A thread's root frame is ``name\\x00<thread>\\x00ident``.

The writer (:func:`frame_identifier`) runs on the writer thread for every sampled frame and
caches per code object; the reader (:func:`parse_frame_identifier`) is used by the exports and
the report pages, on identifiers that may come from a damaged or hostile store, so it accepts
any string and never raises.
"""

from __future__ import annotations

from types import CodeType
from typing import NamedTuple

__all__ = [
    "UNSAMPLED",
    "FrameName",
    "frame_identifier",
    "parse_frame_identifier",
    "thread_root",
]

_FIELD_SEP = "\x00"
_ATTRIBUTE_SEP = "\x01"
_CLASS = "c"
_LINE = "l"
_THREAD_FILE = "<thread>"

#: the frame charged with time between samples that no sample accounts for
UNSAMPLED = f"[unsampled]{_FIELD_SEP}<flamewatch>{_FIELD_SEP}0"

_base_ids: dict[CodeType, str] = {}
_MAX_CACHED = 50_000


def frame_identifier(code: CodeType, line: int) -> str:
    """pyinstrument's identifier for a frame running ``code`` at ``line``."""
    base = _base_ids.get(code)
    if base is None:
        if len(_base_ids) > _MAX_CACHED:
            _base_ids.clear()
        base = _FIELD_SEP.join((code.co_name, code.co_filename, str(code.co_firstlineno)))
        owner = _class_name(code)
        if owner:
            base += f"{_ATTRIBUTE_SEP}{_CLASS}{owner}"
        _base_ids[code] = base
    return f"{base}{_ATTRIBUTE_SEP}{_LINE}{line}"


def thread_root(thread_name: str, thread_id: int) -> str:
    """The identifier of a thread's root frame, above the request's own frames."""
    return _FIELD_SEP.join((thread_name, _THREAD_FILE, str(thread_id)))


def _class_name(code: CodeType) -> str | None:
    qualname: str = getattr(code, "co_qualname", code.co_name)  # 3.11+
    head, _, _ = qualname.rpartition(".")
    if not head or head.endswith("<locals>"):
        return None
    return head.rpartition(".")[2]


class FrameName(NamedTuple):
    """What a frame identifier says, each part empty or ``None`` where it says nothing."""

    function: str
    #: the file name; ``""`` when the identifier has none
    file: str
    #: the function's first line, ``None`` unless an integer is written there
    first_line: int | None
    #: the class owning the function (the ``c`` attribute), ``""`` when none
    owner: str
    #: the running line (the ``l`` attribute) as written, ``""`` when none
    line: str

    @property
    def is_thread(self) -> bool:
        """Whether this is a thread's root frame (see :func:`thread_root`)."""
        return self.file == _THREAD_FILE

    @property
    def qualified_name(self) -> str:
        """``Class.function`` when a class owns the function, else ``function``."""
        return f"{self.owner}.{self.function}" if self.owner else self.function


def parse_frame_identifier(identifier: str) -> FrameName:
    """The parts of ``identifier``; any string is read, a malformed one as far as it goes."""
    head, _, attributes = identifier.partition(_ATTRIBUTE_SEP)
    function, *rest = head.split(_FIELD_SEP)
    owner = line = ""
    for attribute in attributes.split(_ATTRIBUTE_SEP) if attributes else ():
        if not owner and attribute.startswith(_CLASS):
            owner = attribute[1:]
        elif not line and attribute.startswith(_LINE):
            line = attribute[1:]
    return FrameName(
        function=function,
        file=rest[0] if rest else "",
        first_line=_integer(rest[1]) if len(rest) > 1 else None,
        owner=owner,
        line=line,
    )


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
