"""docs/cli.md describes the commands the code has: every ``flamewatch`` and ``flask
flamewatch`` command has its section, and every option of a command is named in it.

The page is written by hand (its prose says what a command is for); this keeps it from
drifting when a command or an option is added, renamed or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from flamewatch.flask_plugin.cli import flamewatch_cli
from flamewatch.reports.cli import main

CLI_PAGE = Path(__file__).parent.parent / "docs" / "cli.md"


def sections() -> dict[str, str]:
    """The page's ``## `command``` sections: heading text -> body."""
    text = CLI_PAGE.read_text(encoding="utf-8")
    parts = re.split(r"^## `([^`]+)`\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _names_option(body: str, option: click.Option) -> bool:
    """Whether the section names one of the option's spellings (``-d`` or ``--database``)."""
    return any(
        re.search(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", body) for spelling in option.opts
    )


COMMANDS = [(f"flamewatch {name}", command) for name, command in main.commands.items()]


@pytest.mark.parametrize(("title", "command"), COMMANDS, ids=[title for title, _ in COMMANDS])
def test_every_flamewatch_command_has_a_section_naming_its_options(
    title: str, command: click.Command
) -> None:
    body = sections().get(title)
    assert body is not None, f"docs/cli.md has no section ## `{title}`"
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    assert [o.opts for o in options if not _names_option(body, o)] == []


def test_the_flask_commands_and_their_options_are_named() -> None:
    body = sections()["flask flamewatch"]
    for name, command in flamewatch_cli.commands.items():
        assert f"flask --app APP flamewatch {name}" in body
        options = [p for p in command.params if isinstance(p, click.Option)]
        assert [o.opts for o in options if not _names_option(body, o)] == []


def test_the_page_has_no_section_for_a_command_that_does_not_exist() -> None:
    known = {title for title, _ in COMMANDS} | {"flask flamewatch", "pytest --flamewatch"}
    assert set(sections()) - known == set()
