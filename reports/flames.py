"""Aggregated profiles: where an endpoint's time goes, per version and group.

The agent stores, per endpoint, version and group, the time its requests spent in each distinct
stack (:mod:`flamewatch.sampler.folding`). :class:`FlameReport` reads those into
:class:`Profile` objects -- per group as stored, or merged over an endpoint's groups -- with the
functions their frames name. The flamegraphs (:mod:`.flame_figures`) draw them; the findings
(:mod:`.findings`) follow a change down their call tree (:mod:`.calltree`) to the code that
holds it.

Everything here is computed from a few thousand rows at most (distinct stacks), never from the
requests themselves.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from flamewatch.sampler.store.connection import StoreConnection

from .aggregate import ReportData

__all__ = ["FlameReport", "Function", "Profile", "share", "signed_ms"]

Stack = tuple[int, ...]  # frame ids, root first


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


def share(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


def signed_ms(ms: float) -> str:
    sign = "+" if ms >= 0 else "\u2212"
    size = abs(ms)
    return f"{sign}{size:.1f} ms" if size < 10 else f"{sign}{size:,.0f} ms"
