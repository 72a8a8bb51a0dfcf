"""The aggregated profiles drawn and exported: icicle charts, differential icicles, speedscope
and collapsed stacks.

Figures are plain plotly dicts for the site's JSON data blocks (see :mod:`.figures`). A node is a
stack prefix (:class:`~.calltree.CallTree`); the stem every request shares (server, WSGI,
Flask's dispatch) is skipped so the chart opens at the view -- and shows the whole chain below
it, even when the view calls a single function -- and nodes below
:data:`MIN_NODE_SHARE` of the time in both profiles are folded into their parent. Labels go
through :func:`~.text.plotly_text`: plotly reads tags and entities in text, and a function's
name is data (and may be of any length: a frame's label is cut to a chart label's length, its
hover text a little longer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .calltree import CallTree
from .flames import Function, Profile, share, signed_ms
from .speedscope import SpeedscopeFrame, speedscope_file
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


def _kept(tree: CallTree) -> tuple[list[int], dict[int, list[float]]]:
    """Nodes worth drawing (from the view down, above the size floor) and their remainder
    values, into which dropped descendants are folded."""
    children = tree.children
    floor = [MIN_NODE_SHARE * total for total in tree.totals]
    order: list[int] = []
    remainder: dict[int, list[float]] = {}
    inclusive = tree.inclusive
    first = floor[0]
    last = floor[-1]  # the same as first for a single profile

    def big(node: int) -> bool:
        values = inclusive[node]
        return values[0] >= first or values[-1] >= last

    pending = [n for n in tree.top if big(n)]
    while pending:
        node = pending.pop()
        order.append(node)
        rest = list(tree.own[node])
        for child in children[node]:
            if big(child):
                pending.append(child)
            else:
                rest = [r + v for r, v in zip(rest, inclusive[child], strict=True)]
        remainder[node] = rest
    return order, remainder


def flame_figure(
    profile: Profile, functions: dict[int, Function], mean_ms: float
) -> dict[str, Any]:
    """An icicle chart of an aggregated profile, in ms per request (an average request)."""
    tree = CallTree([(profile, mean_ms)], functions)
    order, remainder = _kept(tree)
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
    """A differential icicle from the view down: each frame sized by the larger of its two
    times per request, coloured by how many ms per request it gained (red) or lost (blue) --
    in ms, not in share of the time: in a view that only calls one function every frame is
    100 % of the time in both versions, and only the milliseconds say what grew."""
    tree = CallTree([(before, before_mean_ms), (after, after_mean_ms)], functions)
    order, remainder = _kept(tree)
    labels, hover, colors = [], [], []
    for node in order:
        function = functions[tree.frame[node]]
        old, new = tree.inclusive[node]
        old_share, new_share = share(old, before_mean_ms), share(new, after_mean_ms)
        labels.append(plotly_text(function.short))
        colors.append(round(new - old, 3))
        shares = ""
        if min(old_share, new_share) < 0.95:  # the share means something
            shares = f"<br>{old_share:.0%} \u2192 {new_share:.0%} of the time"
        hover.append(
            [
                plotly_text(function.label, LIMIT),
                f"{old:,.2f} \u2192 {new:,.2f}",
                shares,
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
        "%{customdata[2]}<extra></extra>",
        "marker": {
            "colors": colors,
            "colorscale": [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]],
            "cmin": -spread,
            "cmax": spread,
            "cmid": 0,
            "showscale": True,
            "colorbar": {"title": {"text": "ms per<br>request"}},
        },
        "tiling": {"orientation": "v", "flip": "y"},
        "maxdepth": 10,
        "sort": False,
    }
    return {"data": [trace], "layout": _flame_layout()}


def _parents(tree: CallTree, order: Sequence[int]) -> list[str]:
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

    def frame_of(frame: int) -> SpeedscopeFrame:
        function = functions[frame]
        line = function.first_line if function.first_line > 0 else None
        return (function.short, function.filename or None, line)

    stacks = [(stack, ms) for stack, (_, ms) in sorted(profile.stacks.items())]
    return speedscope_file(shorten(name, LIMIT), "milliseconds", stacks, frame_of)


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
