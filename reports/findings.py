"""What got slower or faster, for whom, since when, in which code: the findings of a store.

A :class:`Finding` is the one answer the report, ``flamewatch changes`` (and its JSON), the
demo and ``flamewatch check`` give. It is derived from the store's durations as histograms
(:mod:`.distributions`) and its aggregated profiles (:class:`~.flames.FlameReport`):

- **Versions next to each other.** Per endpoint, each version with at least
  :data:`~.aggregate.MIN_CHANGE_REQUESTS` requests against the one before it that has as many
  (:func:`~.change_tests.compare`: ratio of medians with its 95 % interval, Mann-Whitney test,
  relevance threshold). When a version has a change inside it (:mod:`.changepoints`), its side
  next to the other version is compared, not its mix of both levels. Versions are of two
  kinds, as in the report: a test run (``pytest --flamewatch``) follows the test run before
  it, a deployment the deployment before it; ``against`` compares any two.
- **Few requests where it started.** Versions between the two compared that had some requests,
  too few to compare, are looked at: the first whose median is already nearer the new level
  than the old (half the change or more, on the log scale) is where the change started. The
  finding says so -- *from v5 (8 requests, x2.4, not significant alone), confirmed in v6* --
  and is filed under v5.
- **For whom.** A user or group is a finding of its own only when it changed *differently from
  everyone else* between its versions next to each other: its own comparison is flagged, its
  change differs from the other users' by the relevance threshold both as a multiple (its
  ratio over theirs) and in milliseconds (a fifth of its median, by default), and the test of
  that interaction (:func:`~.change_tests.interaction`) is significant at ``alpha`` divided by
  the number of groups tested for the endpoint (Bonferroni). A change of everyone -- the same
  multiple, or the same milliseconds added -- is thus never also a change of one user,
  however far back that user's previous requests are. An endpoint's change that the changed
  groups explain -- the other users' requests alone are not flagged -- is theirs only.
- **Inside a version**: the change points of :mod:`.changepoints`, as findings with the time
  they started (``since``); there is no profile per hour, so they name no call path.
- **In which code**: the culprit call paths of the two versions' aggregated profiles
  (:func:`~.calltree.culprit_paths`), a group's own profiles when the agent kept them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flamewatch.sampler.histogram import Histogram
from flamewatch.sampler.store.connection import StoreConnection

from .aggregate import MIN_CHANGE_REQUESTS, ReportData
from .calltree import CallPath, CallTree, culprit_paths
from .change_tests import compare, interaction, median, without
from .changepoints import TimeChange, find_time_changes
from .distributions import Distributions, read_distributions
from .finding_model import Direction, Finding, Start, iso_time
from .flames import FlameReport, Profile
from .model import Change
from .stats_tests import ratio
from .summary import open_readonly

__all__ = [
    "Finding",
    "Start",
    "derive_findings",
    "find_changes",
    "iso_time",
    "read_findings",
]

#: call paths listed per finding, at most
TOP_PATHS = 5
#: ...each holding at least this part of the change of the mean duration
MIN_PART = 0.2


def find_changes(
    conn: StoreConnection,
    flames: FlameReport,
    *,
    since: str | None = None,
    version: str | None = None,
    against: str | None = None,
    threshold: float = 0.2,
    alpha: float = 0.01,
) -> list[Finding]:
    """The findings of a store (see :func:`derive_findings`), the one answer the report, the
    command line and scripts share.

    ``since``: only those that started in that version or later (deployment order).
    ``version``: only those that started or were confirmed in it, or happened inside it.
    ``version`` and ``against``: that version compared with ``against`` directly, as if no
    version between them had been deployed (``against`` must be the older). Raises
    :class:`ValueError` for a name that is not a version of the store, or versions in the
    wrong order."""
    distributions = read_distributions(StoreConnection.wrap(conn))
    order = distributions.versions
    for option, name in (("since", since), ("version", version), ("against", against)):
        if name is not None and name not in order:
            known = ", ".join(order[-8:]) or "none"
            raise ValueError(f"{option}: {name!r} is not a version of the store ({known})")
    if against is not None:
        if version is None:
            raise ValueError("against: give the version to compare with it too")
        if order.index(against) >= order.index(version):
            raise ValueError(f"against: {against!r} was not deployed before {version!r}")
        distributions = distributions.only({against, version})
    found = derive_findings(distributions, flames, threshold=threshold, alpha=alpha)
    if since is not None:
        first = order.index(since)
        found = [f for f in found if order.index(f.version) >= first]
    if version is not None:
        found = [f for f in found if version in (f.version, f.confirmed_in)]
    return found


def derive_findings(
    distributions: Distributions, flames: FlameReport, *, threshold: float, alpha: float
) -> list[Finding]:
    """The findings of a store's durations and profiles, by endpoint, then the version where
    each started (deployment order), then time, then group (all users first)."""
    finder = _Finder(distributions, flames, threshold, alpha)
    found = [f for endpoint in distributions.endpoints() for f in finder.endpoint(endpoint)]
    place = {version: i for i, version in enumerate(distributions.versions)}
    found.sort(
        key=lambda f: (f.endpoint, place[f.version], f.since or 0.0, f.group is not None, f.group)
    )
    return found


def read_findings(
    database: str,
    *,
    since: str | None = None,
    version: str | None = None,
    against: str | None = None,
    threshold: float = 0.2,
    alpha: float = 0.01,
) -> list[Finding]:
    """:func:`find_changes` of the store at ``database`` (a path or URL). Raises
    :class:`~flamewatch.sampler.store.StoreError` when there is no readable store."""
    with open_readonly(database) as conn:
        flames = FlameReport(conn, ReportData(conn))
        return find_changes(
            conn,
            flames,
            since=since,
            version=version,
            against=against,
            threshold=threshold,
            alpha=alpha,
        )


@dataclass(frozen=True)
class _Compared:
    """Two versions of one series (an endpoint's, or one group's) compared."""

    before: str
    after: str
    change: Change
    before_h: Histogram
    after_h: Histogram
    skipped: list[tuple[str, Histogram]]  # versions between them with too few requests


@dataclass
class _GroupChange:
    """A group that changed differently from the others between two of its versions."""

    group: str
    pair: _Compared
    verdict: Direction
    p_value: float  # of the interaction
    rest_ratio: float  # the other users' ratio over the same versions
    others_changed: bool = False  # whether the endpoint's change stands for the others too


class _Finder:
    def __init__(
        self, distributions: Distributions, flames: FlameReport, threshold: float, alpha: float
    ) -> None:
        self.d = distributions
        self.flames = flames
        self.threshold = threshold
        self.alpha = alpha

    def _compare(self, endpoint: str, old: str, new: str, a: Histogram, b: Histogram) -> Change:
        return compare(endpoint, old, new, a, b, threshold=self.threshold, alpha=self.alpha)

    def _moved(self, before: Histogram, after: Histogram) -> bool:
        """Whether the medians moved past the relevance threshold: :func:`compare`'s verdict
        is a change only if they did, so a pair that did not is never compared in full."""
        return not (
            1 / (1 + self.threshold) < ratio(median(after), median(before)) < 1 + self.threshold
        )

    def _pairs(
        self, endpoint: str, series: dict[str, Histogram], edges: dict[str, list[Histogram]]
    ) -> list[_Compared]:
        """Each version with enough requests against the previous one of its kind with
        enough, whose medians moved (:meth:`_moved`: the others' verdicts are no change);
        ``edges`` gives a version's first and last side where a change inside it splits
        it."""
        return [
            _Compared(old, new, self._compare(endpoint, old, new, a, b), a, b, skipped)
            for old, new, a, b, skipped in self._neighbours(series, edges)
            if self._moved(a, b)
        ]

    def _neighbours(
        self, series: dict[str, Histogram], edges: dict[str, list[Histogram]]
    ) -> list[tuple[str, str, Histogram, Histogram, list[tuple[str, Histogram]]]]:
        """The pairs of :meth:`_pairs` before they are compared: (older version, newer, the
        older's histogram, the newer's, the versions skipped between them)."""
        result = []
        for kind in self.d.of_one_kind():  # test runs follow test runs, deployments deployments
            previous: tuple[str, Histogram] | None = None
            skipped: list[tuple[str, Histogram]] = []
            for version in kind:
                histogram = series.get(version)
                if histogram is None:
                    continue
                if histogram.total < MIN_CHANGE_REQUESTS:
                    skipped.append((version, histogram))
                    continue
                if previous is not None:
                    old, old_h = previous
                    before = edges.get(old, [old_h])[-1]
                    after = edges.get(version, [histogram])[0]
                    result.append((old, version, before, after, skipped))
                previous, skipped = (version, histogram), []
        return result

    def endpoint(self, endpoint: str) -> list[Finding]:
        versions = self.d.by_version(endpoint)
        found: list[Finding] = []
        edges: dict[str, list[Histogram]] = {}
        for version in versions:
            series = self.d.buckets.get((endpoint, version), [])
            changes = find_time_changes(
                endpoint,
                version,
                series,
                self.d.width(endpoint, version),
                threshold=self.threshold,
                alpha=self.alpha,
            )
            if changes:
                edges[version] = [changes[0].before, changes[-1].after]
                found.extend(self._time_finding(endpoint, version, c) for c in changes)
        groups = self._group_changes(endpoint, versions)
        for pair in self._pairs(endpoint, versions, edges):
            direction = _direction(pair.change)
            if direction is None:
                continue
            concerned = [g for g in groups if g.pair.after == pair.after and g.verdict == direction]
            if concerned and not self._others_changed(endpoint, pair, concerned):
                continue  # the changed groups explain it: theirs only
            for group in concerned:
                group.others_changed = True
            found.append(self._finding(endpoint, pair, direction))
        found.extend(self._finding(endpoint, g.pair, g.verdict, g) for g in groups)
        return found

    # -- groups --------------------------------------------------------------------------------

    def _group_changes(self, endpoint: str, versions: dict[str, Histogram]) -> list[_GroupChange]:
        """The groups that changed differently from everyone else (see the module's text).

        About 4,000 group comparisons at 10^7 requests, most of them of groups whose medians
        did not move: every pair with enough requests on both sides counts for the Bonferroni
        level, but a pair is compared in full (rank test, intervals) only when its medians
        moved past the relevance threshold, the one way its verdict can be a change, and the
        other users' histograms are made only for a pair whose verdict is one."""
        tested: list[tuple[str, _Compared]] = []
        count = 0
        up = 1 + self.threshold
        for group, series in sorted(self.d.by_group(endpoint).items()):
            for old, new, before_h, after_h, skipped in self._neighbours(series, {}):
                others_before = versions[old].total - before_h.total
                others_after = versions[new].total - after_h.total
                if min(others_before, others_after) < MIN_CHANGE_REQUESTS:
                    continue
                count += 1
                if not self._moved(before_h, after_h):
                    continue
                change = self._compare(endpoint, old, new, before_h, after_h)
                tested.append((group, _Compared(old, new, change, before_h, after_h, skipped)))
        level = self.alpha / max(count, 1)
        found = []
        for group, pair in tested:
            direction = _direction(pair.change)
            if direction is None:
                continue
            rest_before = without(versions[pair.before], pair.before_h)
            rest_after = without(versions[pair.after], pair.after_h)
            moved = interaction(pair.before_h, rest_before, pair.after_h, rest_after)
            sign = 1 if direction == "slower" else -1
            relevant = (
                moved.relative_ratio** sign >= up
                and sign * moved.extra_ms >= self.threshold * median(pair.before_h)
            )
            if relevant and moved.p_value < level:
                rest_ratio = pair.change.ratio / moved.relative_ratio
                found.append(_GroupChange(group, pair, direction, moved.p_value, rest_ratio))
        return found

    def _others_changed(
        self, endpoint: str, pair: _Compared, concerned: list[_GroupChange]
    ) -> bool:
        """Whether the requests of everyone but the changed groups changed that way too."""
        before, after = pair.before_h, pair.after_h
        for group in concerned:
            if group.pair.before == pair.before:
                before = without(before, group.pair.before_h)
            after = without(after, group.pair.after_h)
        if min(before.total, after.total) < MIN_CHANGE_REQUESTS:
            return False
        change = self._compare(endpoint, pair.before, pair.after, before, after)
        return change.verdict == pair.change.verdict

    # -- one finding ---------------------------------------------------------------------------

    def _finding(
        self,
        endpoint: str,
        pair: _Compared,
        direction: Direction,
        group: _GroupChange | None = None,
    ) -> Finding:
        change = pair.change
        start = self._start(endpoint, pair, direction)
        before_mean, after_mean = pair.before_h.mean(), pair.after_h.mean()
        name = None if group is None else group.group
        profile_group, before, after = self._profiles(endpoint, pair, name)
        paths: list[CallPath] = []
        if before is not None and after is not None:
            tree = CallTree([(before, before_mean), (after, after_mean)], self.flames.functions)
            sign = 1 if direction == "slower" else -1
            floor = MIN_PART * abs(after_mean - before_mean)
            paths = culprit_paths(tree, sign, floor, TOP_PATHS)
        return Finding(
            endpoint=endpoint,
            version=pair.after if start is None else start.version,
            against=pair.before,
            verdict=direction,
            ratio=change.ratio,
            ci=(change.ratio_low, change.ratio_high),
            # a group's: its own change and its difference from the others, both significant
            p_value=change.p_value if group is None else max(change.p_value, group.p_value),
            group=name,
            paths=paths,
            mean_before_ms=before_mean,
            mean_after_ms=after_mean,
            requests_before=change.previous_count,
            requests_after=change.count,
            confirmed_in=None if start is None else pair.after,
            start=start,
            rest_ratio=None if group is None else group.rest_ratio,
            others_changed=group is not None and group.others_changed,
            profile_group=profile_group,
            before=before,
            after=after,
        )

    def _start(self, endpoint: str, pair: _Compared, direction: str) -> Start | None:
        """The first version between the two compared, with a few requests, whose median is
        already nearer the new level than the old: where the change started."""
        full = math.log(pair.change.ratio) if 0 < pair.change.ratio < math.inf else 0.0
        if full == 0:
            return None
        for version, histogram in pair.skipped:
            early = self._compare(endpoint, pair.before, version, pair.before_h, histogram)
            if early.ratio > 0 and math.log(early.ratio) / full >= 0.5:
                return Start(
                    version=version,
                    requests=histogram.total,
                    ratio=early.ratio,
                    p_value=early.p_value,
                    significant=early.verdict == direction,
                )
        return None

    def _profiles(
        self, endpoint: str, pair: _Compared, group: str | None
    ) -> tuple[str | None, Profile | None, Profile | None]:
        """Whose profiles explain a finding: the group's own when both versions have one."""
        if group is not None:
            before = self.flames.profile(endpoint, pair.before, group)
            after = self.flames.profile(endpoint, pair.after, group)
            if _usable(before) and _usable(after):
                return group, before, after
        before = self.flames.profile(endpoint, pair.before)
        after = self.flames.profile(endpoint, pair.after)
        if _usable(before) and _usable(after):
            return None, before, after
        return None, None, None

    def _time_finding(self, endpoint: str, version: str, found: TimeChange) -> Finding:
        change = found.change
        direction: Direction = "faster" if change.verdict == "faster" else "slower"
        return Finding(
            endpoint=endpoint,
            version=version,
            against=version,
            verdict=direction,
            ratio=change.ratio,
            ci=(change.ratio_low, change.ratio_high),
            p_value=found.p_value,
            group=None,
            paths=[],
            mean_before_ms=found.before.mean(),
            mean_after_ms=found.after.mean(),
            requests_before=found.before.total,
            requests_after=found.after.total,
            since=found.at,
        )


def _direction(change: Change) -> Direction | None:
    if change.verdict == "slower":
        return "slower"
    if change.verdict == "faster":
        return "faster"
    return None


def _usable(profile: Profile | None) -> bool:
    return profile is not None and profile.total_ms > 0
