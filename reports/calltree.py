"""The call tree of aggregated profiles, where a flamegraph starts, and the culprit call paths.

A :class:`CallTree` has a node per stack prefix (the same function reached by two callers is
two nodes), with each profile's time per request in it: *inclusive* (the node and everything
it called) and *own* (at the top of the stack). Two uses:

- **Where to start drawing.** Every request shares a stem of server, WSGI and Flask frames.
  The tree starts at the view: the frame Flask's ``dispatch_request`` called. Above it the
  frames say nothing about the endpoint; below it everything does, even when the view only
  calls one function and the whole profile is one chain (then the chain is drawn whole, the
  view on top). A store without Flask's dispatch frame (another framework, synthetic data)
  starts where the stacks first differ, keeping at least a frame above each leaf.
- **The culprit call paths** (:func:`culprit_paths`). A change of the mean is followed down the
  tree from the view: into every child whose inclusive time changed by at least ``floor``
  (a part of the change of the whole), until no child holds such a part. The frame where the
  descent stops is where the change concentrates: the path to it, from the view down, names
  the code that changed (``checkout -> apply_coupons -> query``) however many other callers
  the leaf has. Ranking functions by their own (self) time instead would name the shared leaf
  -- ``json.dumps``, a driver's ``execute`` -- whose self time grows whenever any caller asks
  more of it. A frame that keeps a part of the change to itself, besides its children's, is
  a path of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .flames import Function, Profile

__all__ = ["DISPATCH_FRAMES", "CallPath", "CallTree", "culprit_paths"]

#: qualified names of the framework frames whose callee is the view
DISPATCH_FRAMES = frozenset(
    {"Flask.dispatch_request", "App.dispatch_request", "Scaffold.dispatch_request"}
)


class CallTree:
    """The call tree of one or more aggregated profiles, in ms per request: each profile's
    sampled time is scaled to its requests' mean duration."""

    def __init__(
        self, profiles: Sequence[tuple[Profile, float]], functions: Mapping[int, Function]
    ) -> None:
        self.functions = functions
        self.index: dict[tuple[int, int], int] = {}  # (parent node, frame) -> node
        self.parent: list[int] = []
        self.frame: list[int] = []
        self.inclusive: list[list[float]] = []
        self.own: list[list[float]] = []
        size = len(profiles)
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

    @cached_property
    def children(self) -> dict[int, list[int]]:
        found: dict[int, list[int]] = defaultdict(list)
        for node, parent in enumerate(self.parent):
            found[parent].append(node)
        return found

    def _name(self, node: int) -> str:
        function = self.functions.get(self.frame[node])
        return "" if function is None else function.name

    @cached_property
    def top(self) -> list[int]:
        """The nodes a flamegraph starts from: the views (the callees of Flask's dispatch
        frame) when the stem leads to one, else the first nodes where the stacks differ."""
        children = self.children
        start = children[-1]
        while len(start) == 1:
            node = start[0]
            below = children[node]
            if self._name(node) in DISPATCH_FRAMES:
                return below or start
            if len(below) != 1 or not children[below[0]]:
                break  # stacks differ below, or the only child is a leaf: keep it a parent
            start = below
        return start

    def path(self, node: int) -> list[int]:
        """The nodes from the top of the tree (the view) down to ``node``."""
        found = []
        tops = set(self.top)
        while node >= 0:
            found.append(node)
            if node in tops:
                break
            node = self.parent[node]
        found.reverse()
        # a path outside the view (a before_request handler): from below the last dispatch
        # frame on it, if any, else as it is
        for place in range(len(found) - 1, -1, -1):
            if self._name(found[place]) in DISPATCH_FRAMES:
                return found[place + 1 :] or found
        return found


@dataclass(frozen=True)
class CallPath:
    """A call path from the view down to the frame where a change concentrates, and the time
    per request spent there (in the frame at its end and what it called, less the deeper paths
    listed on their own) before and after."""

    functions: tuple[Function, ...]
    before_ms: float
    after_ms: float
    before_share: float  # of the requests' mean duration
    after_share: float

    @property
    def growth_ms(self) -> float:
        return self.after_ms - self.before_ms

    @property
    def names(self) -> list[str]:
        return [f.short for f in self.functions]

    @property
    def leaf(self) -> Function:
        return self.functions[-1]

    @property
    def shares_mean_something(self) -> bool:
        """Whether the share of the time is worth saying: not when the path is (nearly) the
        whole request in both versions, as in a view that only calls one function."""
        return min(self.before_share, self.after_share) < 0.95


def culprit_paths(tree: CallTree, sign: int, floor: float, limit: int) -> list[CallPath]:
    """The call paths that hold the change of a two-profile tree (before, after) in the
    direction ``sign`` (+1: grew, -1: shrank), each at least ``floor`` ms per request, the
    largest first, at most ``limit`` (see the module's text)."""
    inclusive, children = tree.inclusive, tree.children

    def change(node: int) -> float:
        return sign * (inclusive[node][1] - inclusive[node][0])

    ends: list[tuple[int, float, float]] = []  # node, before ms, after ms

    def descend(node: int) -> None:
        big = [c for c in children[node] if change(c) >= floor]
        for child in big:
            descend(child)
        before = inclusive[node][0] - sum(inclusive[c][0] for c in big)
        after = inclusive[node][1] - sum(inclusive[c][1] for c in big)
        if not big or sign * (after - before) >= floor:
            ends.append((node, before, after))

    for node in tree.top:
        if change(node) >= floor:
            descend(node)
    ends.sort(key=lambda end: -sign * (end[2] - end[1]))
    before_total, after_total = tree.totals[0], tree.totals[-1]
    return [
        CallPath(
            functions=tuple(tree.functions[tree.frame[n]] for n in tree.path(node)),
            before_ms=before,
            after_ms=after,
            before_share=before / before_total if before_total > 0 else 0.0,
            after_share=after / after_total if after_total > 0 else 0.0,
        )
        for node, before, after in ends[:limit]
    ]
