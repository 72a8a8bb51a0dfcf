"""The aggregated profiles drawn and exported: icicle charts, differential icicles, speedscope
and collapsed stacks.

Figures are plain plotly dicts for the site's JSON data blocks (see :mod:`.figures`). A node is a
stack prefix; the single-child stem every request shares (server, WSGI, Flask's dispatch) is
skipped so the chart opens at the first frame where requests differ, and nodes below
:data:`MIN_NODE_SHARE` of the time in both profiles are folded into their parent. Labels go
through :func:`~.text.plotly_text`: plotly reads tags and entities in text, and a function's
name is data (and may be of any length: a frame's label is cut to a chart label's length, its
hover text a little longer).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson

from .flames import Function, Profile, share, signed_ms
from .text import LIMIT, plotly_text, shorten

__all__ = [
    "MIN_NODE_SHARE",
    "collapsed_stacks",
    "diff_figure",
    "flame_figure",
    "speedscope_document",
]

#: a flamegraph node below this share of the time (in both profiles) joins its parent
MIN_NODE_SHARE = 0.002


# -- figures -----------------------------------------------------------------------------------


class _Tree:
    """The call tree of one or two profiles: a node per stack prefix, in ms per request."""

    def __init__(self, profiles: Sequence[tuple[Profile, float]]) -> None:
        self.index: dict[tuple[int, int], int] = {}  # (parent node, frame) -> node
        self.parent: list[int] = []
        self.frame: list[int] = []
        size = len(profiles)
        self.inclusive: list[list[float]] = []
        self.own: list[list[float]] = []
        for which, (profile, mean_ms) in enumerate(profiles):
            scale = mean_ms / profile.total_ms if profile.total_ms else 0.0
            for stack, (_, ms) in profile.stacks.items():
                value = ms * scale
                node = -1
                for frame in stack:
                    node = self._node(node, frame, size)
                    self.inclusive[node][which] += value
                if node >= 0:
                    self.own[node][which] += value
        self.totals = [mean for _, mean in profiles]

    def _node(self, parent: int, frame: int, size: int) -> int:
        node = self.index.get((parent, frame))
        if node is None:
            node = self.index[(parent, frame)] = len(self.parent)
            self.parent.append(parent)
            self.frame.append(frame)
            self.inclusive.append([0.0] * size)
            self.own.append([0.0] * size)
        return node

    def kept(self) -> tuple[list[int], dict[int, list[float]]]:
        """Nodes worth drawing (below the single-child stem, above the size floor) and their
        remainder values, into which dropped descendants are folded."""
        children: dict[int, list[int]] = defaultdict(list)
        for node, parent in enumerate(self.parent):
            children[parent].append(node)
        roots = children[-1]
        start = roots
        while len(start) == 1 and len(children[start[0]]) == 1:
            start = children[start[0]]  # the request's stem, the same in every stack
        floor = [MIN_NODE_SHARE * total for total in self.totals]
        order: list[int] = []
        remainder: dict[int, list[float]] = {}
        inclusive = self.inclusive
        first = floor[0]
        last = floor[-1]  # the same as first for a single profile

        def big(node: int) -> bool:
            values = inclusive[node]
            return values[0] >= first or values[-1] >= last

        pending = [n for n in start if big(n)]
        while pending:
            node = pending.pop()
            order.append(node)
            rest = list(self.own[node])
            for child in children[node]:
                if big(child):
                    pending.append(child)
                else:
                    rest = [r + v for r, v in zip(rest, self.inclusive[child], strict=True)]
            remainder[node] = rest
        return order, remainder


def flame_figure(
    profile: Profile, functions: dict[int, Function], mean_ms: float
) -> dict[str, Any]:
    """An icicle chart of an aggregated profile, in ms per request (an average request)."""
    tree = _Tree([(profile, mean_ms)])
    order, remainder = tree.kept()
    labels, hover = [], []
    for node in order:
        function = functions[tree.frame[node]]
        labels.append(plotly_text(function.short))
        value = tree.inclusive[node][0]
        hover.append(
            [
                plotly_text(function.label, LIMIT),
                f"{value:,.2f}",
                f"{share(value, mean_ms):.1%}",
            ]
        )
    trace = {
        "type": "icicle",
        "ids": [str(node) for node in order],
        "labels": labels,
        "parents": _parents(tree, order),
        "values": [max(remainder[node][0], 0.0) for node in order],
        "branchvalues": "remainder",
        "customdata": hover,
        "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} ms per request"
        " (%{customdata[2]} of the time)<extra></extra>",
        "marker": {
            "colors": [share(tree.inclusive[node][0], mean_ms) for node in order],
            "colorscale": [[0, "#fde0c5"], [1, "#c8553d"]],
            "cmin": 0,
            "cmax": 1,
        },
        "tiling": {"orientation": "v", "flip": "y"},
        "maxdepth": 10,
        "sort": False,
    }
    return {"data": [trace], "layout": _flame_layout()}


def diff_figure(
    before: Profile,
    after: Profile,
    functions: dict[int, Function],
    before_mean_ms: float,
    after_mean_ms: float,
) -> dict[str, Any]:
    """A differential icicle: each frame sized by the larger of its two times per request,
    coloured by the change of its share of the endpoint's time (red: grew; blue: shrank)."""
    tree = _Tree([(before, before_mean_ms), (after, after_mean_ms)])
    order, remainder = tree.kept()
    labels, hover, colors = [], [], []
    for node in order:
        function = functions[tree.frame[node]]
        old, new = tree.inclusive[node]
        old_share, new_share = share(old, before_mean_ms), share(new, after_mean_ms)
        labels.append(plotly_text(function.short))
        colors.append(round((new_share - old_share) * 100, 2))
        hover.append(
            [
                plotly_text(function.label, LIMIT),
                f"{old:,.2f} \u2192 {new:,.2f}",
                f"{old_share:.0%} \u2192 {new_share:.0%}",
                signed_ms(new - old),
            ]
        )
    spread = max((abs(c) for c in colors), default=1.0) or 1.0
    trace = {
        "type": "icicle",
        "ids": [str(node) for node in order],
        "labels": labels,
        "parents": _parents(tree, order),
        "values": [max(*remainder[node], 0.0) for node in order],
        "branchvalues": "remainder",
        "customdata": hover,
        "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} ms per request (%{customdata[3]})"
        "<br>%{customdata[2]} of the time<extra></extra>",
        "marker": {
            "colors": colors,
            "colorscale": [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]],
            "cmin": -spread,
            "cmax": spread,
            "cmid": 0,
            "showscale": True,
            "colorbar": {"title": {"text": "share<br>points"}},
        },
        "tiling": {"orientation": "v", "flip": "y"},
        "maxdepth": 10,
        "sort": False,
    }
    return {"data": [trace], "layout": _flame_layout()}


def _parents(tree: _Tree, order: Sequence[int]) -> list[str]:
    kept = set(order)
    return [str(tree.parent[n]) if tree.parent[n] in kept else "" for n in order]


def _flame_layout() -> dict[str, Any]:
    return {
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "height": 480,
        "font": {"family": "-apple-system, Segoe UI, Helvetica, Arial, sans-serif", "size": 12},
    }


# -- exports -----------------------------------------------------------------------------------


def speedscope_document(profile: Profile, functions: dict[int, Function], name: str) -> bytes:
    """The profile as a speedscope "sampled" profile: one weighted sample per stack (ms).

    ``name``, the profile's title, is cut to a page's length (it names an endpoint and a
    version, which may be of any length); the frames keep their names whole: it is data."""
    name = shorten(name, LIMIT)
    frame_index: dict[int, int] = {}
    frames: list[dict[str, Any]] = []
    samples, weights = [], []
    for stack, (_, ms) in sorted(profile.stacks.items()):
        indices = []
        for frame in stack:
            index = frame_index.get(frame)
            if index is None:
                function = functions[frame]
                index = frame_index[frame] = len(frames)
                frames.append(
                    {"name": function.short, "file": function.filename, "line": function.first_line}
                )
            indices.append(index)
        samples.append(indices)
        weights.append(ms)
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "milliseconds",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "flamewatch",
    }
    return orjson.dumps(document)


def collapsed_stacks(profile: Profile, functions: dict[int, Function]) -> bytes:
    """Brendan Gregg's collapsed format, one ``frame;frame;frame weight`` line per stack; the
    weight is microseconds of sampled time (``flamegraph.pl``, speedscope and inferno read it)."""
    names: dict[int, str] = {}
    lines = []
    for stack, (_, ms) in sorted(profile.stacks.items()):
        parts = []
        for frame in stack:
            name = names.get(frame)
            if name is None:
                name = names[frame] = _collapsed_name(functions[frame])
            parts.append(name)
        lines.append(f"{';'.join(parts)} {round(ms * 1000)}\n")
    return "".join(lines).encode("utf-8", "surrogatepass")


def _collapsed_name(function: Function) -> str:
    label = function.label
    return label.replace(";", ":").replace("\n", " ").replace("\r", " ")
