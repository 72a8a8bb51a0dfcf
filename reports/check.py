"""``flamewatch check``: did a version get slower than another? A gate for CI.

The verdict is the report's own, not a detector of its own: the store is seen through the two
versions (:mod:`.version_pair`), and :func:`compare_pair` -- the one place where ``check``
decides what changed -- asks the report's comparison: :class:`~.aggregate.ReportData` compares
each endpoint's durations in them (ratio of medians with its 95 % interval, Mann-Whitney test,
relevance threshold), and :class:`~.flames.FlameReport` turns what it flags into findings --
for all the endpoint's requests, or for one group's (a test's, in a test run) -- each with the
function whose own time explains it. It hands them on as :class:`CheckFinding` records, which
is all the text, the Markdown (for a pull request comment or ``$GITHUB_STEP_SUMMARY``) and the
exit status read. Everything else here only picks the versions.

By default the latest version of the store is checked against the one deployed before it of
the same kind: a test run against the test run before it, a deployment against the deployment
before it. Durations measured by a test suite on a CI machine and by production on its servers
are not comparable unless asked for (``--against``).
"""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flamewatch.sampler.store.connection import StoreConnection, open_connection
from flamewatch.sampler.version import TEST_SOURCE

from .aggregate import ReportData
from .flames import Finding, FlameReport, Function
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
    "culprit_path",
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
    path: list[str]  # the culprit's call path, outermost first


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
    endpoint, and its findings with their culprits.

    The one place where ``flamewatch check`` asks what changed: to give it another source of
    findings, this function is all there is to replace.
    """
    data = ReportData(conn, change_threshold=change_threshold)
    flames = FlameReport(conn, data)
    changes = data.changes()
    findings = [_check_finding(f, culprit_path(f, flames.functions)) for f in flames.findings]
    names = {c.endpoint for c in changes}
    not_compared = []
    for endpoint, boxes in data.boxes_by_version().items():
        counts = {name: box.count for name, box in boxes}
        if endpoint not in names and version in counts:
            not_compared.append((endpoint, counts.get(baseline, 0), counts[version]))
    return PairComparison(changes, findings, not_compared)


def _check_finding(finding: Finding, path: list[str]) -> CheckFinding:
    change, culprit = finding.change, finding.responsible
    return CheckFinding(
        endpoint=change.endpoint,
        group=finding.group,
        verdict=change.verdict,
        ratio=change.ratio,
        ratio_low=change.ratio_low,
        ratio_high=change.ratio_high,
        p_value=change.p_value,
        requests_before=change.previous_count,
        requests_after=change.count,
        culprit=None if culprit is None else culprit.words,
        culprit_file=None if culprit is None else culprit.function.filename,
        culprit_line=None if culprit is None else culprit.function.first_line,
        path=path,
    )


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


# -- the culprit's path -------------------------------------------------------------------------

_STDLIB = re.compile(r"[/\\]lib[/\\]python3\.\d+[/\\]")
_FLAMEWATCH = tuple(
    str(Path(__file__).resolve().parent.parent / folder) for folder in ("flask_plugin", "sampler")
)


def culprit_path(finding: Finding, functions: dict[int, Function]) -> list[str]:
    """The call path to the function named for ``finding``: the stack in which its own time
    changed most, from the first frame of the application's code (the server's, Flask's and
    flamewatch's frames above it left out), as short names. Empty without a culprit."""
    culprit = finding.responsible
    before, after = finding.before, finding.after
    if culprit is None or before is None or after is None:
        return []
    ids = {i for i, function in functions.items() if function == culprit.function}
    sign = -1.0 if finding.verdict == "faster" else 1.0

    def growth(stack: tuple[int, ...]) -> float:
        new = _per_request(after.stacks.get(stack), after.total_ms, finding.mean_ms)
        old = _per_request(before.stacks.get(stack), before.total_ms, finding.previous_mean_ms)
        return sign * (new - old)

    stacks = [s for s in after.stacks.keys() | before.stacks.keys() if s and s[-1] in ids]
    if not stacks:
        return [culprit.function.short]
    stack = max(stacks, key=lambda s: (growth(s), s))
    frames = [functions[i] for i in stack]
    start = next((n for n, f in enumerate(frames) if not _is_library(f.filename)), None)
    if start is None:
        start = len(frames) - 1
    shown = [f.short for f in frames[start:]]
    return shown if len(shown) <= PATH_FRAMES else ["…", *shown[-PATH_FRAMES:]]


def _per_request(entry: tuple[int, float] | None, total_ms: float, mean_ms: float) -> float:
    return 0.0 if entry is None or total_ms <= 0 else entry[1] / total_ms * mean_ms


def _is_library(filename: str) -> bool:
    """Whether a frame is the server's, the standard library's, Flask's or flamewatch's."""
    if filename.startswith("<") or _STDLIB.search(filename):
        return True
    parts = Path(filename).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    stdlib = sysconfig.get_paths().get("stdlib", "")
    return filename.startswith(_FLAMEWATCH) or bool(stdlib and filename.startswith(stdlib))
