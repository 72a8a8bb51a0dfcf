"""What the ``flamewatch`` command and the app's ``flask flamewatch`` share: text made safe for
the terminal, the report command's options, and the steps before reading a store.

A module of its own so that the plugin's command group (:mod:`flamewatch.flask_plugin.cli`)
does not import the ``flamewatch`` command itself, whose ``demo`` runs an app with the plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from flamewatch.sampler.store import StoreError

from .transfer import build_histograms

_Command = TypeVar("_Command", bound=Callable[..., Any])

__all__ = [
    "build_report",
    "ensure_histograms",
    "json_text",
    "regression_threshold_option",
    "report_options",
    "terminal_safe",
]

#: C0 and C1 controls, DEL, and the Unicode controls that reorder or hide text (bidi
#: overrides and isolates, line and paragraph separators)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
#: what JSON text may still hold raw: JSON escapes C0 controls but not the rest
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as ``\\xNN``/``\\uNNNN`` (newlines kept
    when asked, for multi-line output built by flamewatch itself)."""
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escaped, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escaped, text)


def json_text(data: Any) -> str:
    """``data`` as indented JSON with no raw control character (the \\u escapes are JSON's
    own, so the text still parses to the same strings)."""
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def ensure_histograms(database: str, quiet: bool = False) -> None:
    """Before a command reads a store: build the latency histograms it lacks (an upgraded
    store; see ``flamewatch migrate``), with a progress bar unless ``quiet``."""
    try:
        build_histograms(database, quiet=quiet)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def regression_threshold_option(
    never: str = "marked slower or faster",
) -> Callable[[_Command], _Command]:
    """The ``--regression-threshold`` option of every command that judges changes, one range
    and default for all; ``never`` says what a smaller change is never, in its help."""
    return click.option(
        "--regression-threshold",
        type=click.FloatRange(0.01, 10),
        default=0.2,
        show_default=True,
        help=f"A median change smaller than this fraction is never {never}.",
    )


def report_options(function: Any) -> Any:
    """The options ``flamewatch report`` and ``flask flamewatch report`` share."""
    options = [
        click.option(
            "--output",
            "-o",
            required=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Directory for the site (created; files in it are replaced).",
        ),
        click.option(
            "--timezone",
            "-z",
            default="UTC",
            show_default=True,
            help="IANA timezone for days and hours of the day, e.g. Europe/Amsterdam.",
        ),
        regression_threshold_option(),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build_report(
    database: str, output: Path, timezone: str, regression_threshold: float, quiet: bool
) -> None:
    from .site import ReportError, write_site  # noqa: PLC0415 -- lazy start-up

    ensure_histograms(database, quiet)
    try:
        index = write_site(
            database,
            output,
            timezone=timezone,
            change_threshold=regression_threshold,
            quiet=quiet,
        )
    except (StoreError, ReportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(index)
