"""``flask flamewatch …``: the same commands, with the app's own store."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from flamewatch.reports.cli_common import (
    build_report,
    ensure_histograms,
    report_options,
    terminal_safe,
)
from flamewatch.reports.summary import format_summary, summarize
from flamewatch.sampler.store import StoreError

__all__ = ["flamewatch_cli"]

flamewatch_cli = AppGroup("flamewatch", help="flamewatch's store for this app.")


@flamewatch_cli.command("summary")
def summary_command() -> None:
    """Print what this app's store holds."""
    agent = current_app.extensions["flamewatch"]
    click.echo(terminal_safe(f"version: {agent.version.label} (from {agent.version.source})"))
    ensure_histograms(agent.database)
    try:
        click.echo(terminal_safe(format_summary(summarize(agent.database)), keep_newlines=True))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@flamewatch_cli.command("report")
@report_options
def report_command(output: Path, timezone: str, regression_threshold: float, quiet: bool) -> None:
    """Build the static report site from this app's store."""
    agent = current_app.extensions["flamewatch"]
    build_report(agent.database, output, timezone, regression_threshold, quiet)
