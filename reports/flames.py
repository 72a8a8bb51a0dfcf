"""Why it got slower: aggregated profiles, their differences, and the functions responsible.

The agent stores, per endpoint, version and group, the time its requests spent in each distinct
stack (:mod:`flamewatch.sampler.folding`). This module reads those into :class:`Profile` objects
and answers the report's question for each change the version comparison flags:

- **Which function.** Per function (name, file and first line), its share of the endpoint's
  sampled time -- inclusive, counted once per stack -- before and after, turned into
  milliseconds per request with the exact mean duration of the requests (shares come from the
  samples, milliseconds from the clock). Functions are ranked by the growth of their *self*
  time (time with the function at the top of the stack): a parent grows whenever a callee does,
  so the first function whose own code takes longer is the one to name. Only functions whose
  own time explains at least :data:`MIN_PART` of the change of the mean are listed: the shares
  of the others wobble with sampling.
- **For whom.** The comparison is also made per user or group (the groups the report keeps,
  see :meth:`~.aggregate.ReportData.boxes_by_group_version`), with the same test and verdict
  rule. A change that only one group shows is said to concern that group, and explained with
  that group's own aggregated profile when the agent kept one (it keeps the first
  ``aggregate_max_groups`` groups per endpoint and process; later ones share one profile). A
  group that changed while the endpoint as a whole did not is a finding of its own.

Everything here is computed from a few thousand rows at most (distinct stacks and the latency
histograms of the groups compared), never from the requests themselves.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

from flamewatch.sampler.store.connection import StoreConnection

from .aggregate import MIN_CHANGE_REQUESTS, ReportData
from .model import Change

__all__ = [
    "Finding",
    "FlameReport",
    "Function",
    "FunctionChange",
    "GroupChange",
    "Profile",
    "compare",
    "share",
    "signed_ms",
]

Stack = tuple[int, ...]  # frame ids, root first

#: functions listed in words per finding, at most
TOP_FUNCTIONS = 5
#: ...each explaining at least this part of the change of the mean duration by its own time
MIN_PART = 0.2
#: the groups the agent uses for requests without a group and past its cap
_NO_GROUP, _OTHER_GROUPS = "", "[other groups]"


@dataclass(frozen=True)
class Function:
    """A function as the agent identifies it: qualified name, file, first line."""

    name: str
    filename: str
    first_line: int

    @cached_property
    def short(self) -> str:
        """The name without the enclosing function of a nested one (``make_app.<locals>.``)."""
        return self.name.rpartition("<locals>.")[2]

    @cached_property
    def label(self) -> str:
        return f"{self.short} ({os.path.basename(self.filename)}:{self.first_line})"


class Profile:
    """An aggregated profile: time (ms) and samples per distinct stack."""

    def __init__(self, stacks: dict[Stack, tuple[int, float]]) -> None:
        self.stacks = stacks

    @classmethod
    def merged(cls, profiles: Iterable[Profile]) -> Profile:
        stacks: dict[Stack, tuple[int, float]] = {}
        for profile in profiles:
            for stack, (n, ms) in profile.stacks.items():
                old_n, old_ms = stacks.get(stack, (0, 0.0))
                stacks[stack] = (old_n + n, old_ms + ms)
        return cls(stacks)

    @cached_property
    def total_ms(self) -> float:
        return sum(ms for _, ms in self.stacks.values())

    @cached_property
    def samples(self) -> int:
        return sum(n for n, _ in self.stacks.values())

    @cached_property
    def inclusive(self) -> dict[int, float]:
        """Frame id -> sampled ms of the stacks it is in (once per stack, recursion or not)."""
        found: dict[int, float] = defaultdict(float)
        for stack, (_, ms) in self.stacks.items():
            for frame in set(stack):
                found[frame] += ms
        return dict(found)

    @cached_property
    def own(self) -> dict[int, float]:
        """Frame id -> sampled ms with it at the top of the stack (self time)."""
        found: dict[int, float] = defaultdict(float)
        for stack, (_, ms) in self.stacks.items():
            if stack:
                found[stack[-1]] += ms
        return dict(found)


@dataclass(frozen=True)
class FunctionChange:
    """One function's time per request before and after (ms; shares of the sampled time)."""

    function: Function
    before_ms: float
    after_ms: float
    before_share: float
    after_share: float
    self_before_ms: float
    self_after_ms: float

    @property
    def growth_ms(self) -> float:
        return self.after_ms - self.before_ms

    @property
    def self_growth_ms(self) -> float:
        return self.self_after_ms - self.self_before_ms

    @property
    def words(self) -> str:
        """``render_feed +18 ms per request, 12% → 41% of the time``."""
        return (
            f"{self.function.short} {signed_ms(self.growth_ms)} per request,"
            f" {self.before_share:.0%} \u2192 {self.after_share:.0%} of the time"
        )


def compare(
    before: Profile,
    after: Profile,
    functions: dict[int, Function],
    before_mean_ms: float,
    after_mean_ms: float,
) -> list[FunctionChange]:
    """Every function of either profile, its own time's growth first (per request)."""
    changes = []
    for frame in before.inclusive.keys() | after.inclusive.keys():
        b_share = share(before.inclusive.get(frame, 0.0), before.total_ms)
        a_share = share(after.inclusive.get(frame, 0.0), after.total_ms)
        changes.append(
            FunctionChange(
                function=functions[frame],
                before_ms=b_share * before_mean_ms,
                after_ms=a_share * after_mean_ms,
                before_share=b_share,
                after_share=a_share,
                self_before_ms=share(before.own.get(frame, 0.0), before.total_ms) * before_mean_ms,
                self_after_ms=share(after.own.get(frame, 0.0), after.total_ms) * after_mean_ms,
            )
        )
    changes.sort(key=lambda c: (-c.self_growth_ms, c.function.name))
    return changes


@dataclass(frozen=True)
class GroupChange:
    """A user's or group's median in one version against the previous one it was seen in."""

    group: str
    change: Change
    mean_ms: float
    previous_mean_ms: float


@dataclass(frozen=True)
class Finding:
    """A flagged change (slower or faster), for whom, and the functions behind it."""

    change: Change
    #: the one user or group it concerns; None when it concerns the endpoint as a whole
    group: str | None
    #: the group whose aggregated profile explains it; None: all the endpoint's requests
    profile_group: str | None
    functions: list[FunctionChange]  # the most responsible first (by growth of own time)
    before: Profile | None
    after: Profile | None
    mean_ms: float
    previous_mean_ms: float

    @property
    def endpoint(self) -> str:
        return self.change.endpoint

    @property
    def version(self) -> str:
        return self.change.version

    @property
    def verdict(self) -> str:
        return self.change.verdict

    @property
    def responsible(self) -> FunctionChange | None:
        return self.functions[0] if self.functions else None

    @property
    def who(self) -> str:
        return "all users" if self.group is None else f"only {self.group}"


class FlameReport:
    """Aggregated profiles and findings of a store, over the report's :class:`ReportData`."""

    def __init__(self, conn: StoreConnection | sqlite3.Connection, data: ReportData) -> None:
        self._conn = StoreConnection.wrap(conn)  # SQLite or PostgreSQL, qmark SQL
        self.data = data

    # -- profiles ----------------------------------------------------------------------------

    @cached_property
    def _has_profiles(self) -> bool:
        """Whether the store has the tables of the aggregated profiles (schema 3 or later)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return row is not None and int(row[0]) >= 3

    @cached_property
    def functions(self) -> dict[int, Function]:
        if not self._has_profiles:
            return {}
        return {
            frame_id: Function(name, filename, first_line)
            for frame_id, name, filename, first_line in self._conn.execute(
                "SELECT id, name, filename, first_line FROM frames"
            )
        }

    @cached_property
    def _profiles(self) -> dict[tuple[str, str, str], Profile]:
        """(endpoint, version, group) -> its aggregated profile."""
        if not self._has_profiles:
            return {}
        stacks = {
            stack_id: tuple(int(part) for part in joined.split(",") if part)
            for stack_id, joined in self._conn.execute("SELECT id, frame_ids FROM stacks")
        }
        found: dict[tuple[str, str, str], dict[Stack, tuple[int, float]]] = defaultdict(dict)
        for endpoint, version, group, stack_id, samples, ms in self._conn.execute(
            "SELECT e.name, v.name, p.group_name, p.stack_id, p.samples, p.time_ms"
            " FROM profile_stacks p JOIN endpoints e ON e.id = p.endpoint_id"
            " JOIN versions v ON v.id = p.version_id"
        ):
            found[(endpoint, version, group)][stacks[stack_id]] = (samples, ms)
        return {key: Profile(table) for key, table in found.items()}

    @cached_property
    def _by_version(self) -> dict[tuple[str, str], list[Profile]]:
        found: dict[tuple[str, str], list[Profile]] = defaultdict(list)
        for (endpoint, version, _), profile in self._profiles.items():
            found[(endpoint, version)].append(profile)
        return found

    def profile(self, endpoint: str, version: str, group: str | None = None) -> Profile | None:
        """The aggregated profile of an endpoint in a version: of one group, or of all."""
        if group is not None:
            return self._profiles.get((endpoint, version, group))
        key = (endpoint, version)
        merged = self._merged.get(key)
        if merged is None and key in self._by_version:
            merged = self._merged[key] = Profile.merged(self._by_version[key])
        return merged

    @cached_property
    def _merged(self) -> dict[tuple[str, str], Profile]:
        return {}

    def profiled_versions(self, endpoint: str) -> list[str]:
        """The versions with an aggregated profile of ``endpoint``, in deployment order."""
        return [v for v in self._version_order if (endpoint, v) in self._by_version]

    @cached_property
    def _version_order(self) -> list[str]:
        return [v.name for v in self.data.versions()]

    # -- comparisons per group ---------------------------------------------------------------

    @cached_property
    def group_changes(self) -> list[GroupChange]:
        """Each kept group's consecutive versions compared, as the endpoints' are (from the
        groups' latency histograms)."""
        groups = self._group_names
        result = []
        for endpoint, per_group in self.data.histograms_by_group_version().items():
            for group, found in per_group.items():
                if group not in groups:
                    continue  # "unknown": requests stored without a group
                present = [(v, h) for v, h in found if h.total >= MIN_CHANGE_REQUESTS]
                for (old, before), (new, after) in pairwise(present):
                    change = self.data.version_change(endpoint, old, new, before, after)
                    result.append(GroupChange(group, change, after.mean(), before.mean()))
        return result

    @cached_property
    def _group_names(self) -> set[str]:
        return {name for (name,) in self._conn.execute("SELECT name FROM user_groups")}

    # -- findings ----------------------------------------------------------------------------

    @cached_property
    def findings(self) -> list[Finding]:
        """Every flagged change, by endpoint, then version: the endpoint's own, and a group's
        where the endpoint as a whole was not flagged that way."""
        by_pair: dict[tuple[str, str], list[GroupChange]] = defaultdict(list)
        for g in self.group_changes:
            by_pair[(g.change.endpoint, g.change.version)].append(g)
        means = {
            (endpoint, version): box.mean
            for endpoint, boxes in self.data.boxes_by_version().items()
            for version, box in boxes
        }
        result = []
        for c in self.data.changes():
            groups = by_pair.get((c.endpoint, c.version), [])
            if c.verdict in ("slower", "faster"):
                only = _only_group(c.verdict, groups, self.data.change_threshold)
                result.append(
                    self._finding(
                        c, only, means[(c.endpoint, c.previous)], means[(c.endpoint, c.version)]
                    )
                )
            for g in groups:
                if g.change.verdict in ("slower", "faster") and g.change.verdict != c.verdict:
                    result.append(self._finding(g.change, g.group, g.previous_mean_ms, g.mean_ms))
        return result

    def _finding(
        self, change: Change, group: str | None, before_mean: float, after_mean: float
    ) -> Finding:
        endpoint, old, new = change.endpoint, change.previous, change.version
        profile_group = group
        before = after = None
        if group is not None:
            before, after = self.profile(endpoint, old, group), self.profile(endpoint, new, group)
        if before is None or after is None:  # no profile of the group's own: the endpoint's
            profile_group = None
            before, after = self.profile(endpoint, old), self.profile(endpoint, new)
        functions: list[FunctionChange] = []
        if before is not None and after is not None and before.total_ms and after.total_ms:
            ranked = compare(before, after, self.functions, before_mean, after_mean)
            sign = -1 if change.verdict == "faster" else 1
            floor = MIN_PART * abs(after_mean - before_mean)
            if sign < 0:
                ranked.reverse()
            functions = [f for f in ranked if sign * f.self_growth_ms > floor][:TOP_FUNCTIONS]
        return Finding(
            change=change,
            group=group,
            profile_group=profile_group,
            functions=functions,
            before=before,
            after=after,
            mean_ms=after_mean,
            previous_mean_ms=before_mean,
        )


def _only_group(direction: str, groups: Sequence[GroupChange], threshold: float) -> str | None:
    """The one group flagged ``direction`` when every other compared group's median moved by
    less than the relevance threshold (whether or not that is certain), if any."""
    moved = [g for g in groups if g.change.verdict == direction]
    others = [g for g in groups if g.change.verdict != direction]
    if len(moved) != 1 or not others:
        return None
    up, down = 1 + threshold, 1 / (1 + threshold)
    if direction == "slower" and all(g.change.ratio < up for g in others):
        return moved[0].group
    if direction == "faster" and all(g.change.ratio > down for g in others):
        return moved[0].group
    return None


def share(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


def signed_ms(ms: float) -> str:
    sign = "+" if ms >= 0 else "\u2212"
    size = abs(ms)
    return f"{sign}{size:.1f} ms" if size < 10 else f"{sign}{size:,.0f} ms"
