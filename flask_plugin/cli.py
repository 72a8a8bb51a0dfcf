"""``flask flamewatch …``: the same commands, with the app's own store."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from flamewatch.reports.summary import format_summary, summarize
from flamewatch.sampler.store import StoreError

__all__ = ["flamewatch_cli"]

flamewatch_cli = AppGroup("flamewatch", help="flamewatch's store for this app.")


@flamewatch_cli.command("summary")
def summary_command() -> None:
    """Print what this app's store holds."""
    agent = current_app.extensions["flamewatch"]
    click.echo(f"version: {agent.version.label} (from {agent.version.source})")
    try:
        click.echo(format_summary(summarize(agent.database)))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
