"""What ``flamewatch check`` says: text for the terminal, Markdown for a pull request.

The Markdown is a summary table (endpoint, ratio of medians with its 95 % interval, p-value,
the culprit's path) fit for a pull request comment or ``$GITHUB_STEP_SUMMARY``. Every name in
it comes from the store -- endpoints, versions, test ids, functions, which the tested code
chose -- and is shortened, made visible and escaped so that it stays text in the table.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from .aggregate import MIN_CHANGE_REQUESTS
from .check import CheckFinding, CheckResult, FailOn
from .model import Change
from .text import shown

__all__ = ["format_markdown", "format_text", "interval", "times"]

_VERDICT_ORDER = {"slower": 0, "faster": 1, "uncertain": 2, "unchanged": 3}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


TIMES, DASH = "\u00d7", "\u2013"


def times(value: float) -> str:
    """A ratio of durations, as the report writes it (``\u00d71.52``)."""
    return f"{TIMES}\u221e" if math.isinf(value) else f"{TIMES}{value:.2f}"


def interval(change: Change | CheckFinding) -> str:
    return f"{times(change.ratio_low)}{DASH}{times(change.ratio_high)}"


def where(finding: CheckFinding) -> str:
    """The culprit's file and first line; the file relative to the working directory when it
    is under it (``flamewatch check`` runs in the project's checkout, as its tests did)."""
    path = Path(finding.culprit_file or "?")
    if path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return f"{path.as_posix()}:{finding.culprit_line}"


def _p(value: float) -> str:
    return f"{value:.2g}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _who(finding: CheckFinding) -> str:
    return "all requests" if finding.group is None else f"only {finding.group}"


def _ordered(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_VERDICT_ORDER[c.verdict], -c.ratio, c.endpoint))


def _headline(result: CheckResult, fail_on: FailOn) -> str:
    failing = result.failures(fail_on)
    if result.against is None:
        return "nothing to compare with: the store holds no earlier version of this kind"
    if not result.changes and not failing:
        return f"nothing compared: no endpoint has {MIN_CHANGE_REQUESTS} requests in both versions"
    if not failing:
        return "nothing got slower" if fail_on == "slower" else "nothing changed"
    slower = sum(f.verdict == "slower" for f in failing)
    faster = len(failing) - slower
    parts = [f"{n} {word}" for n, word in ((slower, "slower"), (faster, "faster")) if n]
    return f"{' and '.join(parts)} (fails with --fail-on {fail_on})"


def format_text(result: CheckResult, fail_on: FailOn) -> str:
    """The findings and the comparison of every endpoint, for a terminal."""
    lines = [f"flamewatch check: {_versions(result)}, store {result.store}"]
    if result.findings:
        lines.append("findings:")
    for f in result.findings:
        lines.append(
            f"  {f.verdict}: {f.endpoint} ({_who(f)}): {times(f.ratio)}"
            f" (95 % CI {interval(f)}), p {_p(f.p_value)},"
            f" {f.requests_before} → {f.requests_after} requests"
        )
        if f.culprit is None:
            lines.append("    no aggregated profile of both versions explains it")
        else:
            lines.append(f"    {f.culprit}, in {where(f)}")
            lines.append(f"    path: {' → '.join(f.path)}")
    if result.changes:
        lines.append("endpoints compared:")
        width = max(len(c.endpoint) for c in result.changes)
        for c in _ordered(result.changes):
            lines.append(
                f"  {c.endpoint:<{width}}  {c.verdict:<9}  {times(c.ratio):>7}"
                f"  {interval(c):<15}  p {_p(c.p_value):<7}  {c.previous_count} → {c.count}"
            )
    if result.not_compared:
        shown_counts = ", ".join(f"{e} ({old} → {new})" for e, old, new in result.not_compared)
        lines.append(
            f"not compared (fewer than {MIN_CHANGE_REQUESTS} requests in a version): {shown_counts}"
        )
    lines.append(_headline(result, fail_on))
    return "\n".join(lines)


def _versions(result: CheckResult) -> str:
    checked = f"{result.version} ({result.version_source})"
    if result.against is None:
        return checked
    return f"{checked} against {result.against} ({result.against_source})"


def _md(value: str, limit: int = 120) -> str:
    """A store's string as literal Markdown text inside a table cell."""
    text = shown(value, limit).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def format_markdown(result: CheckResult, fail_on: FailOn) -> str:
    """A summary table for a pull request comment or ``$GITHUB_STEP_SUMMARY``."""
    title = _md(result.version)
    if result.against is not None:
        title += f" against {_md(result.against)}"
    lines = [f"### flamewatch check: {title}", "", f"**{_md(_headline(result, fail_on))}**", ""]
    if result.findings:
        lines += [
            "| verdict | endpoint | median ratio (95 % CI) | p | requests | culprit |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in result.findings:
            endpoint = _md(f.endpoint) + ("" if f.group is None else f" (only {_md(f.group)})")
            lines.append(
                f"| {f.verdict} | {endpoint} | {times(f.ratio)} ({interval(f)})"
                f" | {_p(f.p_value)} | {f.requests_before} → {f.requests_after} | {_culprit(f)} |"
            )
        lines.append("")
    others = [c for c in _ordered(result.changes) if c.verdict not in ("slower", "faster")]
    if others:
        lines += [
            f"<details><summary>{_count(len(others), 'other endpoint')} compared</summary>",
            "",
            "| verdict | endpoint | median ratio (95 % CI) | p | requests |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in others:
            lines.append(
                f"| {c.verdict} | {_md(c.endpoint)} | {times(c.ratio)} ({interval(c)})"
                f" | {_p(c.p_value)} | {c.previous_count} → {c.count} |"
            )
        lines += ["", "</details>", ""]
    if result.not_compared:
        names = ", ".join(f"{_md(e)} ({old} → {new})" for e, old, new in result.not_compared[:50])
        lines.append(f"Not compared (fewer than {MIN_CHANGE_REQUESTS} requests): {names}")
    return "\n".join(lines).rstrip() + "\n"


def _culprit(finding: CheckFinding) -> str:
    if finding.culprit is None:
        return "no profile explains it"
    path = " → ".join(_md(part, 60) for part in finding.path)
    return f"{path}: {_md(finding.culprit)}, in {_md(where(finding))}"
