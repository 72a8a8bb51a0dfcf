"""An outlier's request facts, taken from Flask's request object (redacted later, off-thread).

Called in the request thread only for a request that has already passed its threshold when the
view returns (so the body can still be read, bounded by ``max_body``), and otherwise on the
writer thread after the request ended -- then only from what needs no body: the query string,
headers, and whatever the app itself already parsed.
"""

from __future__ import annotations

from typing import Any

from flask import Request

__all__ = ["describe_request"]


def describe_request(request: Request, *, read_body: bool, max_body: int) -> dict[str, Any]:
    """Raw facts: ``query``/``form`` as (key, value) pairs, ``json``, ``headers`` pairs, ..."""
    facts: dict[str, Any] = {
        "path": request.path,
        "query": list(request.args.items(multi=True)),
        "headers": list(request.headers.items()),
        "content_type": request.content_type,
        "content_length": request.content_length,
    }
    length = request.content_length
    small = length is not None and length <= max_body
    cached = request.__dict__
    if "form" in cached or (read_body and small and request.mimetype in _FORM_TYPES):
        facts["form"] = list(request.form.items(multi=True))
        facts["files"] = [
            {"field": field, "filename": f.filename, "content_type": f.content_type}
            for field, f in request.files.items(multi=True)
        ]
    if request.is_json:
        loud, silent = getattr(request, "_cached_json", (Ellipsis, Ellipsis))
        parsed = loud if loud is not Ellipsis else silent  # what the app already parsed
        if parsed is Ellipsis and read_body and small:
            parsed = request.get_json(silent=True)
        if parsed is not Ellipsis:
            facts["json"] = parsed
        else:
            facts["body"] = _body_note(length, max_body)
    elif length and "form" not in facts:
        facts["body"] = _body_note(length, max_body)
    return facts


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _body_note(length: int | None, max_body: int) -> str:
    if length is not None and length > max_body:
        return f"[{length} bytes, over the {max_body // 1024} KiB limit: not stored]"
    return f"[{length} bytes, not read by the app: not stored]"
