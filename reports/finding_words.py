"""A finding in words: the sentences ``flamewatch changes``, the demo and the report site say.

One function per sentence, so the terminal and the site say the same thing. Names that came
from the store (endpoints, versions, groups, functions) go through ``name``: as they are for a
terminal (which escapes the whole line, :func:`~.cli.terminal_safe`), cut and made visible for
a page (:func:`~.text.shown`, escaped by the template after). Times go through ``when``.

- The headline says what, where, for whom, how much and how sure:
  ``checkout is slower in v4 against v3, for all users: x2.10 (95 % CI x1.90-x2.30,
  p < 0.001), mean 6.1 → 12.8 ms per request``; a change that started in a version with few
  requests says ``from v5 (8 requests, x2.40, not significant alone), confirmed in v6``; one
  inside a version says ``inside v3 since 2026-12-01 05:00:00``.
- Each call path says where the time went, from the view down, in ms per request:
  ``checkout → apply_coupons → query +7.0 ms per request (2.0 → 9.0 ms)``, and its share of
  the request's time only where that means something (not when the path is the whole request,
  as in a view that only calls one function: ``100 % → 100 %`` says nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from .calltree import CallPath
from .findings import Finding
from .flames import signed_ms

__all__ = [
    "TIMES",
    "amounts",
    "describe",
    "headline",
    "headline_rest",
    "ms",
    "no_path_words",
    "p_words",
    "path_words",
    "utc_when",
]

TIMES = "\u00d7"
ARROW = "\u2192"

Name = Callable[[str], str]
When = Callable[[float], str]


def utc_when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _as_is(value: str) -> str:
    return value


def ms(value: float) -> str:
    """Milliseconds as the report prints them: two decimals below 100, none above."""
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def p_words(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _ratio(value: float) -> str:
    return f"{TIMES}{value:.2f}"


def headline(f: Finding, when: When = utc_when, name: Name = _as_is) -> str:
    """What changed, where, for whom, how much and how sure (see the module's text)."""
    return f"{name(f.endpoint)} {headline_rest(f, when, name)}"


def headline_rest(f: Finding, when: When = utc_when, name: Name = _as_is) -> str:
    """The headline after the endpoint's name (a page links the name)."""
    if f.since is not None:
        where = f"inside {name(f.version)} since {when(f.since)}"
    elif f.start is not None and f.confirmed_in is not None:
        start = f.start
        alone = "significant alone" if start.significant else "not significant alone"
        where = (
            f"from {name(f.version)} ({start.requests} requests, {_ratio(start.ratio)},"
            f" {alone}), confirmed in {name(f.confirmed_in)}, against {name(f.against)}"
        )
    else:
        where = f"in {name(f.version)} against {name(f.against)}"
    if f.group is None:
        who = "for all users"
    elif f.others_changed:
        who = f"for {name(f.group)} more than for the others ({_ratio(f.rest_ratio or 1.0)})"
    else:
        who = f"only for {name(f.group)} (the others {_ratio(f.rest_ratio or 1.0)})"
    low, high = f.ci
    return (
        f"is {f.verdict} {where}, {who}: {_ratio(f.ratio)}"
        f" (95 % CI {_ratio(low)}\u2013{_ratio(high)}, {p_words(f.p_value)}),"
        f" mean {ms(f.mean_before_ms)} {ARROW} {ms(f.mean_after_ms)} ms per request"
    )


def path_words(path: CallPath, name: Name = _as_is) -> str:
    """A call path and its time per request before and after (see the module's text)."""
    frames = f" {ARROW} ".join(name(function.short) for function in path.functions)
    return f"{frames} {signed_ms(path.growth_ms)} per request ({amounts(path)})"


def amounts(path: CallPath) -> str:
    """``2.0 → 9.0 ms``, and ``; 8 % → 40 % of the time`` where the share means something."""
    text = f"{ms(path.before_ms)} {ARROW} {ms(path.after_ms)} ms"
    if path.shares_mean_something:
        text += f"; {path.before_share:.0%} {ARROW} {path.after_share:.0%} of the time"
    return text


def no_path_words(f: Finding) -> str:
    """Why a finding names no call path."""
    if f.since is not None:
        return "the profiles are kept per version, not per hour: see the version's profile"
    return "no aggregated profile of both versions explains it"


def describe(f: Finding, when: When = utc_when, name: Name = _as_is) -> list[str]:
    """The headline and a line per call path (or why there is none)."""
    lines = [headline(f, when, name)]
    if f.paths:
        lines.extend(f"    {path_words(p, name)}" for p in f.paths)
    else:
        lines.append(f"    ({no_path_words(f)})")
    return lines
