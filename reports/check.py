"""``flamewatch check``: did a version get slower than another? A gate for CI.

The verdict is ``flamewatch changes``'s, not a detector of its own: the store is seen through
the two versions (:mod:`.version_pair`), and :func:`compare_pair` -- the one place where
``check`` decides what changed -- asks :func:`~.findings.find_changes` for the findings of the
version against the baseline, compared directly (ratio of medians with its 95 % interval,
Mann-Whitney test, relevance threshold; for all the endpoint's requests, or for one group's --
a test's, in a test run -- that changed differently from the rest), each with the call paths
from the view down to where the change concentrates. It hands them on as :class:`CheckFinding`
records, which is all the text, the Markdown (for a pull request comment or
``$GITHUB_STEP_SUMMARY``) and the exit status read. The report's comparison of every endpoint
(:class:`~.aggregate.ReportData`, the same tests) is listed beside them. Everything else here
only picks the versions.

By default the latest version of the store is checked against the one deployed before it of
the same kind: a test run against the test run before it, a deployment against the deployment
before it. Durations measured by a test suite on a CI machine and by production on its servers
are not comparable unless asked for (``--against``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flamewatch.sampler.store.connection import StoreConnection, open_connection
from flamewatch.sampler.version import TEST_SOURCE

from .aggregate import ReportData
from .calltree import CallPath
from .finding_words import amounts
from .findings import Finding, find_changes
from .flames import FlameReport, signed_ms
from .model import Change
from .version_pair import VersionRef, restrict_to_pair, versions_in_order

__all__ = [
    "CheckError",
    "CheckFinding",
    "CheckResult",
    "FailOn",
    "PairComparison",
    "check_versions",
    "compare_pair",
]

FailOn = Literal["slower", "any"]
#: frames of a culprit's path shown at most (the deepest, ending with the culprit)
PATH_FRAMES = 6


class CheckError(ValueError):
    """The versions asked for cannot be compared (not in the store, or the same one)."""


@dataclass(frozen=True)
class CheckFinding:
    """One flagged change, as ``check`` says it: whatever finds it, this is all it reads."""

    endpoint: str
    group: str | None  # the one user or group (a test) it concerns; None: all requests
    verdict: str  # "slower" or "faster"
    ratio: float  # of the medians, checked version / baseline
    ratio_low: float  # its 95 % confidence interval
    ratio_high: float
    p_value: float
    requests_before: int
    requests_after: int
    culprit: str | None  # the function that explains it, in words; None: no profile does
    culprit_file: str | None
    culprit_line: int | None
    path: list[str]  # the culprit's call path, from the view down
    ms_before: float | None = None  # time per request on that path, baseline; None: no path
    ms_after: float | None = None  # ... and in the version checked


@dataclass(frozen=True)
class PairComparison:
    """What changed between the two versions a connection shows (see :func:`compare_pair`)."""

    changes: list[Change]  # every endpoint compared, by name
    findings: list[CheckFinding]
    not_compared: list[tuple[str, int, int]]  # endpoint, requests in baseline, in version


@dataclass(frozen=True)
class CheckResult:
    """One version compared with another, endpoint by endpoint."""

    store: str
    version: str
    version_source: str
    against: str | None  # None: the store holds no version to compare with
    against_source: str | None
    changes: list[Change]
    findings: list[CheckFinding]
    not_compared: list[tuple[str, int, int]]

    def failures(self, fail_on: FailOn) -> list[CheckFinding]:
        """The findings that fail the check: slower ones, or every one with ``"any"``."""
        wanted = ("slower",) if fail_on == "slower" else ("slower", "faster")
        return [f for f in self.findings if f.verdict in wanted]


def check_versions(
    database: str,
    version: str | None = None,
    against: str | None = None,
    *,
    change_threshold: float = 0.2,
) -> CheckResult:
    """Compare ``version`` (default: the latest) with ``against`` (default: the one before it
    of the same kind). Raises :class:`StoreError` or :class:`CheckError` saying what is wrong.
    """
    conn = open_connection(database, readonly=False)  # the views are made on it, see below
    try:
        ordered = versions_in_order(conn)
        new = _find(ordered, version, "--version") if version else _latest(ordered)
        old = _find(ordered, against, "--against") if against else _previous(ordered, new)
        if old is None:
            return CheckResult(conn.label, new[1], new[2], None, None, [], [], [])
        if old[0] == new[0]:
            raise CheckError(f"--against names the version checked ({new[1]}); name another")
        restrict_to_pair(conn, old, new)
        _read_only(conn)
        compared = compare_pair(conn, old[1], new[1], change_threshold=change_threshold)
        return CheckResult(
            conn.label,
            new[1],
            new[2],
            old[1],
            old[2],
            compared.changes,
            compared.findings,
            compared.not_compared,
        )
    finally:
        conn.close()


def compare_pair(
    conn: StoreConnection, baseline: str, version: str, *, change_threshold: float
) -> PairComparison:
    """What changed from ``baseline`` to ``version``, on a connection that shows only those
    two versions (:func:`~.version_pair.restrict_to_pair`): the report's comparison of every
    endpoint, and the findings of ``flamewatch changes`` for the two compared directly, with
    their culprits. Changes inside a version (a time finding) are left to ``changes``: the
    check compares versions.

    The one place where ``flamewatch check`` asks what changed: to give it another source of
    findings, this function is all there is to replace.
    """
    data = ReportData(conn, change_threshold=change_threshold)
    flames = FlameReport(conn, data)
    changes = data.changes()
    found = find_changes(
        conn,
        flames,
        version=version,
        against=baseline,
        threshold=change_threshold,
        alpha=data.alpha,
    )
    findings = [_check_finding(f) for f in found if f.kind == "version"]
    names = {c.endpoint for c in changes}
    not_compared = []
    for endpoint, boxes in data.boxes_by_version().items():
        counts = {name: box.count for name, box in boxes}
        if endpoint not in names and version in counts:
            not_compared.append((endpoint, counts.get(baseline, 0), counts[version]))
    return PairComparison(changes, findings, not_compared)


def _check_finding(finding: Finding) -> CheckFinding:
    """A finding as ``check`` says it: its largest call path is the culprit, named at the
    frame where the change concentrates, with the path to it from the view."""
    low, high = finding.ci
    culprit = finding.paths[0] if finding.paths else None
    path = [] if culprit is None else culprit.names
    return CheckFinding(
        endpoint=finding.endpoint,
        group=finding.group,
        verdict=finding.verdict,
        ratio=finding.ratio,
        ratio_low=low,
        ratio_high=high,
        p_value=finding.p_value,
        requests_before=finding.requests_before,
        requests_after=finding.requests_after,
        culprit=None if culprit is None else _culprit_words(culprit),
        culprit_file=None if culprit is None else culprit.leaf.filename,
        culprit_line=None if culprit is None else culprit.leaf.first_line,
        path=path if len(path) <= PATH_FRAMES else ["\u2026", *path[-PATH_FRAMES:]],
        ms_before=None if culprit is None else culprit.before_ms,
        ms_after=None if culprit is None else culprit.after_ms,
    )


def _culprit_words(culprit: CallPath) -> str:
    """``price_lines +40 ms per request (20.0 → 60.0 ms; 40 % → 70 % of the time)``."""
    return f"{culprit.leaf.short} {signed_ms(culprit.growth_ms)} per request ({amounts(culprit)})"


def _find(ordered: list[VersionRef], name: str, option: str) -> VersionRef:
    for found in ordered:
        if found[1] == name:
            return found
    known = ", ".join(v[1] for v in ordered[-8:]) or "none"
    raise CheckError(f"{option} {name!r} is not a version of the store (the latest: {known})")


def _latest(ordered: list[VersionRef]) -> VersionRef:
    if not ordered:
        raise CheckError("the store holds no version yet: record a test run or requests first")
    return ordered[-1]


def _previous(ordered: list[VersionRef], version: VersionRef) -> VersionRef | None:
    """The version deployed last before ``version`` among those of its kind (test runs or
    deployments), if any."""
    place = next(i for i, v in enumerate(ordered) if v[0] == version[0])
    is_test = version[2] == TEST_SOURCE
    earlier = [v for v in ordered[:place] if (v[2] == TEST_SOURCE) == is_test]
    return earlier[-1] if earlier else None


def _read_only(conn: StoreConnection) -> None:
    """From now on one consistent snapshot, never a write (PostgreSQL; SQLite reads what is
    committed, as the report does)."""
    if conn.is_postgres:
        import psycopg  # noqa: PLC0415 -- optional: only for a PostgreSQL store

        conn.raw.autocommit = False
        conn.raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.raw.read_only = True
