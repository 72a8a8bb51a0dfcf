"""The ``flamewatch`` command.

Everything it prints that a store holds (endpoint names, versions, user/group labels, which the
monitored app's clients can choose) goes through :func:`terminal_safe` or, as JSON, through
:func:`json_text`: a control character or escape sequence in a stored string is shown escaped,
never sent to the terminal, where it could recolour, retitle or rewrite what the user sees.

The modules only some commands need (the report's pages and jinja2, ``check``'s statistics,
pyinstrument's sessions, the demo's Flask app) are imported when such a command runs (``noqa:
PLC0415 -- lazy start-up``): ``flamewatch --help`` and ``flamewatch summary`` do not wait for them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import click

from flamewatch.sampler.storable import DEFAULT_HISTOGRAM_GROUPS
from flamewatch.sampler.store import StoreError, is_postgres, make_store, resolve_database
from flamewatch.sampler.store.connection import connection_of, driver_errors, safe_url, sqlite_file
from flamewatch.sampler.store.retention import prune as prune_store
from flamewatch.sampler.store.retention import prune_histograms

from .cli_common import (
    build_report,
    ensure_histograms,
    json_text,
    regression_threshold_option,
    report_options,
    terminal_safe,
)
from .export import export_profile
from .summary import format_summary, summarize
from .transfer import build_histograms, copy_store, migrate_store

__all__ = ["main"]


@click.group()
@click.version_option(package_name="flamewatch")
def main() -> None:
    """flamewatch: what your Flask service stored, and what got slower."""


database_option = click.option(
    "--database",
    "-d",
    required=True,
    metavar="PATH_OR_URL",
    help="The store: a SQLite file path, a sqlite:///… or a postgresql://… URL.",
)


@main.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def summary(database: str, as_json: bool) -> None:
    """Print what a store holds: versions, endpoints, outliers, drops."""
    ensure_histograms(database)
    try:
        result = summarize(database)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json_text(result.to_json()))
    else:
        click.echo(terminal_safe(format_summary(result), keep_newlines=True))


@main.command()
@database_option
@click.option("--endpoint", "-e", help="Only outliers of this endpoint.")
@click.option("--version", "-v", "version", help="Only outliers of this version.")
@click.option("--limit", type=click.IntRange(1), help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
def outliers(
    database: str, endpoint: str | None, version: str | None, limit: int | None, as_json: bool
) -> None:
    """List captured outliers, newest first."""
    from .outliers import list_outliers  # noqa: PLC0415 -- lazy start-up

    try:
        rows = list_outliers(database, endpoint=endpoint, version=version, limit=limit)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json_text([row.to_json() for row in rows]))
        return
    if not rows:
        click.echo("no outliers captured")
        return
    click.echo(
        f"{'id':>6}  {'started (UTC)':<19}  {'endpoint':<24} {'version':<14} {'user/group':<16}"
        f" {'ms':>9} {'threshold':>9}  profile"
    )
    for row in rows:
        when = row.to_json()["started_at"][:19].replace("T", " ")
        threshold = "-" if row.threshold_ms is None else f"{row.threshold_ms:.1f}"
        profile = f"{row.sample_count} samples" if row.profile_bytes else "none"
        endpoint, version = terminal_safe(row.endpoint), terminal_safe(row.version)
        group = terminal_safe(row.group or "-")
        click.echo(
            f"{row.id:>6}  {when:<19}  {endpoint:<24} {version:<14}"
            f" {group:<16} {row.duration_ms:>9.1f} {threshold:>9}  {profile}"
        )


@main.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of text.")
@click.option(
    "--since",
    metavar="VERSION",
    help="Only what changed in this version or later (in deployment order).",
)
@regression_threshold_option("a finding")
def changes(database: str, as_json: bool, since: str | None, regression_threshold: float) -> None:
    """What got slower or faster: for whom, since when, in which code.

    The report's findings: each version against the one before it of its kind (a test run
    against the test run before it, a deployment against the deployment before it), each user
    or group that changed differently from the others, changes inside a version over time,
    with the call paths that hold them. The JSON follows docs/changes.schema.json.
    """
    from .finding_words import describe  # noqa: PLC0415 -- lazy start-up
    from .findings import read_findings  # noqa: PLC0415 -- lazy start-up

    try:
        found = read_findings(database, threshold=regression_threshold, since=since)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(f"--{exc}") from None
    if as_json:
        click.echo(json_text([f.to_json() for f in found]))
        return
    if not found:
        click.echo("no change found")
        return
    for finding in found:
        click.echo(terminal_safe("\n".join(describe(finding)), keep_newlines=True))


class _AsciiId(click.ParamType):  # type: ignore[type-arg]
    """An outlier id in ASCII digits: ``int()`` also takes other scripts' digits ('١٢٣')."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        if not (text.isascii() and text.isdigit()):
            self.fail(f"{text!r} is not an outlier id (ASCII digits)", param, ctx)
        return int(text)


_ascii_id = _AsciiId()


@main.command()
@click.argument("outlier_id", metavar="ID", type=_ascii_id)
@database_option
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["pyisession", "speedscope", "html"]),
    default="pyisession",
    show_default=True,
    help="pyisession opens with `pyinstrument --load`; speedscope with speedscope.app.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="File to write ('-' for standard output). Default: outlier-ID.<format extension>.",
)
def profile(outlier_id: int, database: str, fmt: str, output: Path | None) -> None:
    """Export the profile of one outlier."""
    from .outliers import load_session  # noqa: PLC0415 -- lazy start-up

    try:
        data = export_profile(load_session(database, outlier_id), fmt)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        output = Path(f"outlier-{outlier_id}{_EXTENSIONS[fmt]}")
    if str(output) == "-":
        stdout: BinaryIO = sys.stdout.buffer
        stdout.write(data)
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {output} ({len(data)} bytes)", err=True)


_EXTENSIONS = {"pyisession": ".pyisession", "speedscope": ".speedscope.json", "html": ".html"}


@main.command()
@database_option
@click.option(
    "--histogram-groups",
    type=click.IntRange(0, 10_000),
    default=DEFAULT_HISTOGRAM_GROUPS,
    show_default=True,
    help="Groups with latency histograms of their own per endpoint and version, for the rows"
    " stored before the histograms existed (FLAMEWATCH_HISTOGRAM_GROUPS).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def migrate(database: str, histogram_groups: int, quiet: bool) -> None:
    """Upgrade a store's schema to this flamewatch's version (workers do it when they start),
    and build the latency histograms of the rows stored before them (resumable)."""
    try:
        before, after = migrate_store(database)
        folded = build_histograms(database, quiet=quiet, histogram_groups=histogram_groups)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if before == after:
        click.echo(f"schema version {after}: already current")
    elif before == 0:
        click.echo(f"schema version {after}: created")
    else:
        click.echo(f"schema version {before} -> {after}: migrated")
    if folded:
        click.echo(f"latency histograms built from {folded} stored requests")


@main.command()
@click.option("--from", "source", required=True, metavar="PATH_OR_URL", help="The store to read.")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="PATH_OR_URL",
    help="An empty store to write (a new SQLite file or an empty PostgreSQL database).",
)
def copy(source: str, target: str) -> None:
    """Copy a store into another, e.g. SQLite into PostgreSQL; ids are kept."""
    try:
        copied = copy_store(
            source, target, progress=lambda table, n: click.echo(f"{table}: {n} rows", err=True)
        )
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(copied.rows.values())
    requests = copied.rows.get("requests", 0)
    outliers = copied.rows.get("outliers", 0)
    click.echo(f"copied {total} rows ({requests} requests, {outliers} outliers)")


@main.command()
@database_option
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(0, min_open=True),
    metavar="DAYS",
    help="Delete requests and outliers that started more than this many days ago (the latency"
    " histograms are kept).",
)
@click.option(
    "--histograms-older-than",
    "histogram_days",
    type=click.FloatRange(0, min_open=True),
    metavar="DAYS",
    help="Delete the hourly and daily latency histograms and traffic counts older than this many"
    " days (whole UTC days), and the histograms of versions last seen before then (the"
    " cumulative ones behind the metrics are kept).",
)
@click.option(
    "--profiles-only",
    is_flag=True,
    help="Delete only captured outliers (profiles, params, facts); keep the request timings.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=5000,
    show_default=True,
    help="Rows deleted per transaction.",
)
def prune(
    database: str,
    days: float | None,
    histogram_days: float | None,
    profiles_only: bool,
    batch_size: int,
) -> None:
    """Delete old requests and outliers, and old latency histograms, in short transactions,
    while workers keep writing."""
    if days is None and histogram_days is None:
        raise click.UsageError("give --older-than DAYS, --histograms-older-than DAYS, or both")
    lines = []
    try:
        if not is_postgres(database) and not sqlite_file(database).is_file():
            raise StoreError(f"no flamewatch store at {str(sqlite_file(database))!r}")
        store = make_store(resolve_database(database, "."))
        store.open()
        try:
            now = time.time()
            if days is not None:
                result = prune_store(
                    connection_of(store),
                    now - days * 86_400,
                    profiles_only=profiles_only,
                    batch_size=batch_size,
                )
                kept = " (request timings kept)" if profiles_only else ""
                lines.append(
                    f"deleted {result.outliers} outliers and {result.requests} requests older"
                    f" than {days:g} days in {result.batches} batches{kept}"
                )
            if histogram_days is not None:
                pruned = prune_histograms(connection_of(store), now - histogram_days * 86_400)
                lines.append(
                    f"deleted {pruned.rows} histogram rows older than {histogram_days:g} days"
                    f" ({pruned.hours} hours, {pruned.versions} endpoint versions) in"
                    f" {pruned.batches} batches"
                )
        finally:
            store.close()
    except ValueError as exc:
        raise click.ClickException(f"{safe_url(database)}: {exc}") from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    except driver_errors() as exc:  # what was deleted in earlier batches stays deleted
        raise click.ClickException(f"pruning stopped: {exc}") from None
    for line in lines:
        click.echo(line)


class _CannotCheck(click.ClickException):
    """A store or version ``flamewatch check`` cannot use: exit status 2, as a usage error,
    so that a CI step tells a broken gate from a failed one (1)."""

    exit_code = 2


@main.command()
@database_option
@click.option("--version", "version", metavar="V", help="The version checked. Default: the latest.")
@click.option(
    "--against",
    metavar="BASE",
    help="The version it is compared with. Default: the one deployed before it of the same"
    " kind (a test run's previous test run, a deployment's previous deployment).",
)
@click.option(
    "--fail-on",
    type=click.Choice(["slower", "any"]),
    default="slower",
    show_default=True,
    help="Exit 1 when an endpoint got slower, or with 'any' when one changed either way.",
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE",
    help="Also write a summary table in Markdown (a pull request comment,"
    " $GITHUB_STEP_SUMMARY); '-' for standard output.",
)
@regression_threshold_option()
def check(
    database: str,
    version: str | None,
    against: str | None,
    fail_on: str,
    markdown: Path | None,
    regression_threshold: float,
) -> None:
    """Compare a version with another: exit 0 when nothing got slower, 1 when something did,
    2 when the store or the versions cannot be used."""
    from .check import CheckError, check_versions  # noqa: PLC0415 -- lazy start-up
    from .check_text import format_markdown, format_text  # noqa: PLC0415 -- lazy start-up

    mode: Any = fail_on
    try:
        result = check_versions(database, version, against, change_threshold=regression_threshold)
    except (StoreError, CheckError) as exc:
        raise _CannotCheck(str(exc)) from None
    except Exception as exc:  # a driver's error while reading: the gate is broken, not red
        raise _CannotCheck(f"cannot read {database}: {exc}") from None
    click.echo(terminal_safe(format_text(result, mode), keep_newlines=True))
    if markdown is not None:
        text = format_markdown(result, mode)
        if str(markdown) == "-":
            click.echo(text, nl=False)
        else:
            try:
                markdown.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise _CannotCheck(f"cannot write {markdown}: {exc.strerror}") from None
    if result.failures(mode):
        sys.exit(1)


@main.command()
@database_option
@report_options
def report(
    database: str, output: Path, timezone: str, regression_threshold: float, quiet: bool
) -> None:
    """Build the static report site from a store; print the path of its index.html."""
    build_report(database, output, timezone, regression_threshold, quiet)


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
    """Run a sample app under traffic across three versions; build its report site."""
    from .demo import run_demo  # noqa: PLC0415 -- lazy start-up
    from .outliers import list_outliers, load_session  # noqa: PLC0415 -- lazy start-up

    database = run_demo(output, requests_per_version, progress=click.echo)
    click.echo("")
    click.echo(terminal_safe(format_summary(summarize(str(database))), keep_newlines=True))
    captured = [o for o in list_outliers(str(database)) if o.profile_bytes]
    click.echo("")
    click.echo(f"{len(captured)} outliers captured with a profile, slowest first:")
    for outlier in sorted(captured, key=lambda o: -o.duration_ms)[:5]:
        endpoint, version = terminal_safe(outlier.endpoint), terminal_safe(outlier.version)
        group = terminal_safe(outlier.group or "-")
        click.echo(
            f"  #{outlier.id:<4} {endpoint:<12} {version:<8} {group:<8}"
            f" {outlier.duration_ms:8.1f} ms"
        )
    if captured:
        slowest = max(captured, key=lambda o: o.duration_ms)
        session = load_session(str(database), slowest.id)
        for fmt, suffix in (("html", ".html"), ("pyisession", ".pyisession")):
            path = output / f"outlier-{slowest.id}{suffix}"
            path.write_bytes(export_profile(session, fmt))
            click.echo(f"Profile of #{slowest.id}: {path}")
    from .site import write_site  # noqa: PLC0415 -- lazy start-up

    index = write_site(str(database), output / "site", quiet=False)
    click.echo("")
    click.echo(f"The store is {database}; see it again with: flamewatch summary -d {database}")
    click.echo(f"List its outliers with: flamewatch outliers -d {database}")
    click.echo(f"The report site (open it in a browser, no server needed): {index}")
