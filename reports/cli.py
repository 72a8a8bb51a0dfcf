"""The ``flamewatch`` command."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from flamewatch.sampler.store import StoreError

from .summary import format_summary, summarize

__all__ = ["main"]


@click.group()
@click.version_option(package_name="flamewatch")
def main() -> None:
    """flamewatch: what your Flask service stored, and what got slower."""


database_option = click.option(
    "--database",
    "-d",
    required=True,
    metavar="PATH",
    help="The store: a SQLite file path or sqlite:///… URL.",
)


@main.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def summary(database: str, as_json: bool) -> None:
    """Print what a store holds: versions, endpoints, outliers, drops."""
    try:
        result = summarize(database)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_summary(result))


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("flamewatch-demo"),
    show_default=True,
    help="Directory for the demo's store.",
)
@click.option(
    "--requests",
    "requests_per_version",
    type=click.IntRange(10),
    default=600,
    show_default=True,
    help="Requests sent to each version.",
)
def demo(output: Path, requests_per_version: int) -> None:
    """Run a sample app under traffic across three versions and summarize the store."""
    from .demo import run_demo

    database = run_demo(output, requests_per_version, progress=click.echo)
    click.echo("")
    click.echo(format_summary(summarize(str(database))))
    click.echo("")
    click.echo(f"The store is {database}; see it again with: flamewatch summary -d {database}")
