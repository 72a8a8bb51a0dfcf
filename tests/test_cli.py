"""The ``flamewatch`` command and ``flask flamewatch``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask, request
from helpers import flush, slow_checkout

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.cli import main


def _traffic(app: Flask, n: int = 12) -> None:
    client = app.test_client()
    for i in range(n):
        client.get(f"/items/{i}" if i % 3 else "/")
    flush(app)


def test_summary_prints_what_the_store_holds(app: Flask, db_path: Path) -> None:
    _traffic(app)
    result = CliRunner().invoke(main, ["summary", "--database", str(db_path)])
    assert result.exit_code == 0, result.output
    assert f"store: {db_path}" in result.output
    assert "12 requests, 0 outliers, from 1 process starts; 0 records dropped" in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert lines["item"].split()[1:3] == ["/items/<int:item_id>", "8"]
    assert lines["index"].split()[1:3] == ["/", "4"]
    assert "(not monitored)" in lines["static"]
    assert lines["v1"].split()[1] == "12"


def test_summary_json_matches_the_store(app: Flask, db_path: Path) -> None:
    _traffic(app)
    result = CliRunner().invoke(main, ["summary", "-d", f"sqlite:///{db_path}", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["requests"] == 12
    by_name = {e["name"]: e for e in data["endpoints"]}
    assert by_name["item"]["requests"] == 8
    assert by_name["item"]["median_ms"] <= by_name["item"]["p90_ms"]
    assert [v["name"] for v in data["versions"]] == ["v1"]


def test_summary_of_a_missing_store_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    result = CliRunner().invoke(main, ["summary", "--database", str(missing)])
    assert result.exit_code == 1
    assert result.output == f"Error: no flamewatch store at '{missing}'\n"
    not_a_store = tmp_path / "text.sqlite3"
    not_a_store.write_text("hello")
    result = CliRunner().invoke(main, ["summary", "--database", str(not_a_store)])
    assert result.exit_code == 1
    assert "is not a readable flamewatch store" in result.output
    assert "Traceback" not in result.output


def test_flask_cli_summary_uses_the_apps_store(app: Flask, db_path: Path) -> None:
    _traffic(app, 3)
    result = app.test_cli_runner().invoke(args=["flamewatch", "summary"])
    assert result.exit_code == 0, result.output
    assert "version: v1 (from config)" in result.output
    assert f"store: {db_path}" in result.output


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [Path(sys.executable).with_name("flamewatch"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "summary" in out
    assert "demo" in out


def test_demo_serves_three_versions_and_summarizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --output, as in the README's command
    result = CliRunner().invoke(main, ["demo", "--output", "demo", "--requests", "60"])
    assert result.exit_code == 0, result.output
    store = tmp_path / "demo" / "flamewatch.sqlite3"
    assert (tmp_path / "demo" / "site" / "index.html").is_file()
    assert f"The store is {store}" in result.output
    data = json.loads(CliRunner().invoke(main, ["summary", "-d", str(store), "--json"]).output)
    assert [(v["name"], v["requests"]) for v in data["versions"]] == [
        ("1.0.0", 60),
        ("1.1.0", 60),
        ("1.2.0", 60),
    ]


def test_ci_runs_the_readmes_test_command_exactly() -> None:
    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    ci_command = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{ci_command}\n```" in readme
    assert "pytest" in ci_command


TERMINAL_ATTACK = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\r"  # title, clear, C1 CSI, bidi, CR


@pytest.fixture
def hostile_store(tmp_path: Path) -> Path:
    """A store whose endpoint, version and group names hold terminal escape sequences, and an
    outlier of theirs: what a client of the monitored app can make it store."""
    database = tmp_path / "hostile.sqlite3"
    app = Flask("hostile", instance_path=str(tmp_path))
    app.config.update(TESTING=True)

    def view() -> str:
        if request.args.get("slow"):
            slow_checkout()
        return "ok"

    app.add_url_rule("/x", endpoint=f"ep{TERMINAL_ATTACK}", view_func=view)
    fw = Flamewatch(
        app,
        database=str(database),
        version=f"v{TERMINAL_ATTACK}",
        outlier_warmup=10,
        group_by=lambda req: f"g{TERMINAL_ATTACK}",
    )
    client = app.test_client()
    for _ in range(30):
        client.get("/x")
    fw.flush()
    client.get("/x?slow=1")
    fw.close()
    return database


@pytest.mark.parametrize(
    "command", [["outliers"], ["summary"], ["outliers", "--json"], ["summary", "--json"]]
)
def test_stored_strings_never_reach_the_terminal_raw(
    hostile_store: Path, command: list[str]
) -> None:
    result = CliRunner().invoke(main, [*command, "-d", str(hostile_store)])
    assert result.exit_code == 0, result.output
    unsafe = [c for c in result.output if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    assert not unsafe
    assert "\u202e" not in result.output
    if "--json" in command:
        data = json.loads(result.output)  # still JSON, of the very strings stored
        if command[0] == "outliers":
            # the slow request at least; on a loaded machine a quick one may be flagged too
            assert data
            assert {(o["endpoint"], o["group"]) for o in data} == {
                (f"ep{TERMINAL_ATTACK}", f"g{TERMINAL_ATTACK}")
            }
        else:
            assert [v["name"] for v in data["versions"]] == [f"v{TERMINAL_ATTACK}".strip()]
    else:
        assert r"\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\x0d" in result.output
    if command == ["outliers"]:
        listed = result.output.splitlines()[1:]
        assert listed
        for row in listed:
            assert r"ep\x1b]0;owned" in row
            assert r"g\x1b]0;owned" in row


def test_flask_cli_summary_escapes_stored_strings_too(tmp_path: Path) -> None:
    app = Flask("hostileflask", instance_path=str(tmp_path))
    app.config.update(TESTING=True)
    app.add_url_rule("/x", endpoint=f"ep{TERMINAL_ATTACK}", view_func=lambda: "ok")
    fw = Flamewatch(app, database=str(tmp_path / "s.sqlite3"), version=f"v{TERMINAL_ATTACK}")
    app.test_client().get("/x")
    fw.flush()
    result = app.test_cli_runner().invoke(args=["flamewatch", "summary"])
    fw.close()
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert r"ep\x1b]0;owned" in result.output


def test_profile_refuses_an_id_in_other_scripts_digits(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["profile", "١٢٣", "-d", str(tmp_path / "store.sqlite3")])
    assert result.exit_code == 2
    assert "is not an outlier id (ASCII digits)" in result.output
