"""The one speedscope writer: a "sampled" profile in speedscope's file format.

flamewatch has two kinds of profile to hand to speedscope (https://www.speedscope.app): an
outlier's own pyinstrument session (:func:`.export.to_speedscope`, frames named by pyinstrument's
frame identifiers, weights in seconds) and an endpoint's aggregated profile per version
(:func:`.flame_figures.speedscope_document`, frames named by function ids, weights in
milliseconds). Both are a list of weighted stacks; this module turns such a list into the file,
so the document's shape -- what makes it valid against speedscope's published schema -- is
written once. Each caller only says how one of its frames is named (:data:`SpeedscopeFrame`).

The document is written by hand rather than with pyinstrument's ``SpeedscopeRenderer``, whose
output does not validate against the schema (``"activeProfileIndex": null`` and null
``file``/``line``) and which drops frames under 1% of the total by default.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, Literal, TypeVar

import orjson

__all__ = ["SPEEDSCOPE_SCHEMA", "SpeedscopeFrame", "speedscope_file"]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"

#: a frame as speedscope shows it: name, file (``None`` when unknown), line (``None`` when
#: unknown); frames equal in all three are one frame of the file
SpeedscopeFrame = tuple[str, str | None, int | None]

FrameId = TypeVar("FrameId", bound=Hashable)


def speedscope_file(
    name: str,
    unit: Literal["seconds", "milliseconds"],
    stacks: Iterable[tuple[Sequence[FrameId], float]],
    frame_of: Callable[[FrameId], SpeedscopeFrame],
) -> bytes:
    """A speedscope file with one sampled profile titled ``name``: one sample per stack (root
    first), weighted in ``unit``. ``frame_of`` names a caller's frame id; it is asked once per
    distinct id, and ids it names alike share one frame."""
    table = _FrameTable(frame_of)
    samples: list[list[int]] = []
    weights: list[float] = []
    for stack, weight in stacks:
        samples.append([table.index(frame) for frame in stack])
        weights.append(weight)
    document = {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "flamewatch",
        "activeProfileIndex": 0,
        "shared": {"frames": table.frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": unit,
                "startValue": 0,
                "endValue": sum(weights),  # summed in order, as a reader adding weights would
                "samples": samples,
                "weights": weights,
            }
        ],
    }
    return orjson.dumps(document)


class _FrameTable(Generic[FrameId]):
    """speedscope's shared frame list, built as frames are met."""

    def __init__(self, frame_of: Callable[[FrameId], SpeedscopeFrame]) -> None:
        self.frames: list[dict[str, str | int]] = []
        self._frame_of = frame_of
        self._by_frame: dict[SpeedscopeFrame, int] = {}
        self._by_id: dict[FrameId, int] = {}  # so each caller's id is named once

    def index(self, frame_id: FrameId) -> int:
        found = self._by_id.get(frame_id)
        if found is None:
            frame = self._frame_of(frame_id)
            found = self._by_frame.get(frame)
            if found is None:
                found = self._by_frame[frame] = len(self.frames)
                self.frames.append(_frame_dict(frame))
            self._by_id[frame_id] = found
        return found


def _frame_dict(frame: SpeedscopeFrame) -> dict[str, str | int]:
    """speedscope's frame: unknown file or line left out, not written as null (the schema
    wants a string and a number when they are there)."""
    name, file, line = frame
    written: dict[str, str | int] = {"name": name}
    if file is not None:
        written["file"] = file
    if line is not None:
        written["line"] = line
    return written
