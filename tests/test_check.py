"""``flamewatch check``: the report's comparison of two versions as a CI gate.

The store is a real history (:mod:`flame_history`): ``feed`` slower in v2 (``render_feed``),
``search`` faster in v3 (``rank_results``), the rest unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flame_history import make_flame_history
from helpers import Database
from pgserver import PostgresServer

from flamewatch.reports.check import CheckFinding, CheckResult
from flamewatch.reports.check_text import format_markdown
from flamewatch.reports.cli import main
from flamewatch.reports.model import Change
from flamewatch.sampler.store import ProcessInfo, RequestRecord, SQLiteStore


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    tmp = tmp_path_factory.mktemp("check")
    if request.param == "sqlite":
        database: Database = tmp / "store.sqlite3"
        make_flame_history(database, tmp, rounds=6)
        yield database
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.database()
    make_flame_history(url, tmp, rounds=6)  # type: ignore[arg-type]
    yield url
    server.drop(url)


def _check(database: Database, *args: str) -> Any:
    return CliRunner().invoke(main, ["check", "-d", str(database), *args])


def _compared(output: str) -> dict[str, str]:
    """endpoint -> verdict, from the 'endpoints compared' lines."""
    lines = output.split("endpoints compared:\n")[1].splitlines()
    return {line.split()[0]: line.split()[1] for line in lines if line.startswith("  ")}


def test_a_slower_endpoint_fails_the_check_with_its_function(history: Database) -> None:
    checked = _check(history, "--version", "v2", "--against", "v1")
    assert checked.exit_code == 1, checked.output
    lines = checked.output.splitlines()
    assert lines[0].startswith("flamewatch check: v2 (config) against v1 (config), store ")
    assert lines[1] == "findings:"
    assert lines[2].startswith("  slower: feed (all requests): \u00d7")
    assert lines[3].startswith("    render_feed +")
    assert "flame_history.py:" in lines[3]
    assert lines[4] == "    path: feed \u2192 render_feed"
    assert _compared(checked.output)["feed"] == "slower"
    assert {v for e, v in _compared(checked.output).items() if e != "feed"} <= {
        "unchanged",
        "uncertain",
    }
    assert lines[-1] == "1 slower (fails with --fail-on slower)"


def test_by_default_the_latest_version_is_checked_against_the_one_before(
    history: Database,
) -> None:
    checked = _check(history)
    assert checked.exit_code == 0, checked.output  # search got faster: nothing slower
    assert checked.output.startswith("flamewatch check: v3 (config) against v2 (config)")
    assert "  faster: search (all requests)" in checked.output
    assert "path: search \u2192 rank_results" in checked.output
    assert checked.output.endswith("nothing got slower\n")
    strict = _check(history, "--fail-on", "any")
    assert strict.exit_code == 1, strict.output
    assert strict.output.endswith("1 faster (fails with --fail-on any)\n")


def test_any_two_versions_compare_in_either_order(history: Database) -> None:
    checked = _check(history, "--version", "v1", "--against", "v3")
    assert checked.exit_code == 1, checked.output
    assert checked.output.startswith("flamewatch check: v1 (config) against v3 (config)")
    verdicts = _compared(checked.output)
    assert (verdicts["feed"], verdicts["search"]) == ("faster", "slower")
    assert "path: search \u2192 rank_results" in checked.output
    assert "path: feed \u2192 render_feed" in checked.output


def test_the_markdown_summary_is_a_table_of_the_findings(history: Database) -> None:
    checked = _check(history, "--version", "v2", "--against", "v1", "--markdown", "-")
    assert checked.exit_code == 1
    markdown = checked.output.split("### ", 1)[1]
    assert markdown.startswith("flamewatch check: v2 against v1\n")
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert table[0] == "| verdict | endpoint | median ratio (95 % CI) | p | requests | culprit |"
    assert table[2].startswith("| slower | feed | \u00d7")
    assert "| feed \u2192 render\\_feed: render\\_feed \\+" in table[2]
    assert "<summary>4 other endpoints compared</summary>" in markdown


def test_markdown_keeps_stored_names_as_text() -> None:
    hostile = "a|b`*_[x](http://e)<script>\n# h"
    change = Change(hostile, "v2|x", "v1", 1.0, 0.9, 1.1, 0.5, 20, 20, "unchanged")
    finding = CheckFinding(
        hostile, hostile, "slower", 3.0, 2.5, 3.5, 0.001, 20, 20,
        f"{hostile} +4 ms per request", f"/{hostile}.py", 7, [hostile, "view|x"],
    )  # fmt: skip
    result = CheckResult("s", "v2|x", "tests", "v1", "tests", [change], [finding], [])
    markdown = format_markdown(result, "slower")
    row = next(line for line in markdown.splitlines() if line.startswith("| unchanged"))
    assert row.count("|") - row.count("\\|") == 6  # five cells, whatever the name holds
    assert "&lt;script&gt;" in row
    assert "\\`\\*\\_\\[x\\]\\(http://e\\)" in row
    assert "\\x0a\\# h" in row  # the newline shown, the heading mark escaped
    row = next(line for line in markdown.splitlines() if line.startswith("| slower"))
    assert row.count("|") - row.count("\\|") == 7  # six cells: endpoint, group, culprit, path
    assert "&lt;script&gt;" in row.split(" | ")[-1]
    assert "view\\|x" in row
    assert markdown.startswith("### flamewatch check: v2\\|x against v1\n")


def _one_version_store(path: Path, versions: list[str]) -> None:
    store = SQLiteStore(path)
    store.open()
    try:
        for n, version in enumerate(versions):
            process = ProcessInfo("host", 1 + n, version, "config", 1000.0 + n, "test")
            process_id = store.register_process(process)
            record = RequestRecord(
                "index", "/", "GET", 200, 1000.0 + n, 3.0, None, None, False, None
            )
            store.write_requests(process_id, [record])
    finally:
        store.close()


def test_what_cannot_be_checked_exits_2_and_says_why(tmp_path: Path) -> None:
    missing = _check(tmp_path / "missing.sqlite3")
    assert (missing.exit_code, missing.output) == (
        2,
        f"Error: no flamewatch store at '{tmp_path / 'missing.sqlite3'}'\n",
    )
    (tmp_path / "text.sqlite3").write_text("not a database")
    broken = _check(tmp_path / "text.sqlite3")
    assert broken.exit_code == 2
    assert "is not a readable flamewatch store" in broken.output
    empty = tmp_path / "empty.sqlite3"
    _one_version_store(empty, [])
    nothing = _check(empty)
    assert (nothing.exit_code, nothing.output) == (
        2,
        "Error: the store holds no version yet: record a test run or requests first\n",
    )
    store = tmp_path / "store.sqlite3"
    _one_version_store(store, ["1.0", "2.0"])
    unknown = _check(store, "--version", "3.0")
    assert unknown.exit_code == 2
    assert unknown.output == (
        "Error: --version '3.0' is not a version of the store (the latest: 1.0, 2.0)\n"
    )
    itself = _check(store, "--against", "2.0")
    assert (itself.exit_code, itself.output) == (
        2,
        "Error: --against names the version checked (2.0); name another\n",
    )
    usage = _check(store, "--fail-on", "faster")
    assert usage.exit_code == 2
    few = _check(store)  # one request a version: nothing to compare
    assert few.exit_code == 0, few.output
    assert few.output.splitlines()[1:] == [
        "not compared (fewer than 10 requests in a version): index (1 \u2192 1)",
        "nothing compared: no endpoint has 10 requests in both versions",
    ]
    with sqlite3.connect(store) as conn:  # the check wrote nothing, not even its views
        assert (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'view'").fetchone()[0]
            == 0
        )
