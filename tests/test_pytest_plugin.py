"""The pytest plugin: a project's own test runs recorded like deployments, and checked.

A real small project (:mod:`pytest_project`: an app factory, fixtures, a suite) is written into
the test's folder, and its suite is run by pytest in a fresh process, as a CI job runs it, with
``--flamewatch``. Nothing of the project is changed by the plugin: its files are compared byte
for byte after each run. The in-process run (pytester) is there for what only the test's own
process can see: the threads left behind, Flask as it was, an app attached before the run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from helpers import Database, rows
from pytest_project import SUITE_TESTS, project_bytes, run_suite, set_slowdown, write_project

from flamewatch.flask_plugin import Flamewatch, extension
from flamewatch.reports.cli import main
from flamewatch.reports.site import write_site

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

#: runs of the suite per version where a verdict is checked: on this project's loaded 2-core
#: machine one run per version made an unchanged version slower about once in 26 checks,
#: three made it in none of 12 (benchmarks/bench_pytest_gate.py, docs/ci.md)
RUNS_PER_VERSION = 3
#: a commit id in the project's fake git repository (see _fake_git)
COMMIT = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f70"


def _record(root: Path, store: Database, *args: str) -> str:
    done = run_suite(root, f"--flamewatch={store}", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _check(store: Database, *args: str) -> Any:
    return CliRunner().invoke(main, ["check", "-d", str(store), *args])


def _groups(store: Database) -> dict[tuple[str, str], int]:
    """(test, endpoint) -> requests stored."""
    return {
        (r["grp"], r["endpoint"]): r["n"]
        for r in rows(
            store,
            "SELECT g.name AS grp, e.name AS endpoint, count(*) AS n FROM requests r"
            " JOIN user_groups g ON g.id = r.group_id JOIN endpoints e ON e.id = r.endpoint_id"
            " GROUP BY g.name, e.name",
        )
    }


def test_a_view_made_slower_fails_the_check_which_names_its_function(
    store_db: Database, tmp_path: Path
) -> None:
    root = tmp_path / "shop"
    write_project(root)
    written = project_bytes(root)
    out = _record(root, store_db, "--flamewatch-version", "run-1")
    assert "flamewatch: 30 requests of 2 apps recorded in" in out
    assert "as version run-1 (tests)" in out
    assert project_bytes(root) == written  # the project's code, conftest and tests as they were
    # every request is its test's, and the version is a test run's
    assert _groups(store_db) == {
        (SUITE_TESTS[0], "catalogue"): 15,
        (SUITE_TESTS[1], "invoice"): 15,
    }
    for _ in range(RUNS_PER_VERSION - 1):  # the runs of a version add up
        _record(root, store_db, "--flamewatch-version", "run-1")
    assert [tuple(r) for r in rows(store_db, "SELECT name, source FROM versions")] == [
        ("run-1", "tests")
    ]

    set_slowdown(root, 3.0)
    written = project_bytes(root)
    for _ in range(RUNS_PER_VERSION):
        _record(root, store_db, "--flamewatch-version", "run-2")
    summary = tmp_path / "summary.md"
    checked = _check(store_db, "--markdown", str(summary))
    assert checked.exit_code == 1, checked.output
    lines = checked.output.splitlines()
    assert lines[0].startswith("flamewatch check: run-2 (tests) against run-1 (tests), store")
    assert lines[1:5] == [
        "findings:",
        lines[2],
        lines[3],
        "    path: invoice \u2192 price_lines",
    ]
    assert lines[2].startswith("  slower: invoice (all requests): \u00d7")
    assert lines[3].startswith("    price_lines +")
    first_line = (
        (root / "shop" / "__init__.py").read_text().splitlines().index("def price_lines(count):")
    )
    assert lines[3].endswith(f"/shop/shop/__init__.py:{first_line + 1}")
    assert "catalogue" not in "\n".join(lines[:5])  # it did not change
    assert lines[-1] == "1 slower (fails with --fail-on slower)"
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("### flamewatch check: run-2 against run-1\n")
    row = next(line for line in markdown.splitlines() if line.startswith("| slower |"))
    assert row.startswith("| slower | invoice | \u00d7")
    assert row.count("|") == 7  # six cells: names with Markdown's characters are escaped
    assert "invoice \u2192 price\\_lines: price\\_lines \\+" in row

    for _ in range(RUNS_PER_VERSION):  # no change since run 2
        _record(root, store_db, "--flamewatch-version", "run-3")
    checked = _check(store_db)
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("flamewatch check: run-3 (tests) against run-2 (tests)")
    assert checked.output.endswith("nothing got slower\n")
    assert project_bytes(root) == written


def test_runs_of_one_version_add_up(store_db: Database, tmp_path: Path) -> None:
    root = tmp_path / "shop"
    write_project(root)
    for _ in range(2):
        _record(root, store_db, "--flamewatch-version", "same")
    assert _groups(store_db) == {
        (SUITE_TESTS[0], "catalogue"): 30,
        (SUITE_TESTS[1], "invoice"): 30,
    }
    (versions,) = rows(store_db, "SELECT count(*) AS n FROM versions")
    (processes,) = rows(store_db, "SELECT count(*) AS n FROM processes")
    assert (versions["n"], processes["n"]) == (1, 2)  # one agent a run, for its two apps


def test_with_the_plugin_off_nothing_of_flamewatch_is_imported(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    write_project(root)
    script = (
        "import json, sys, pytest\n"
        "code = pytest.main(['-q', '-p', 'no:cacheprovider'])\n"
        "print(json.dumps({'code': int(code), 'modules': sorted(sys.modules)}))\n"
    )
    done = run_suite(root, "--help")
    assert "--flamewatch=STORE" in done.stdout  # the plugin is loaded...
    assert "--flamewatch-version=LABEL" in done.stdout
    ran = _python(root, script)
    assert ran["code"] == 0
    assert "flamewatch_pytest" in ran["modules"]
    assert "shop" in ran["modules"]  # the suite ran its app...
    # ...and no module of flamewatch was imported
    assert [m for m in ran["modules"] if m.split(".")[0] == "flamewatch"] == []
    assert not list(root.rglob("*.sqlite3"))
    heavy = ("flask", "werkzeug", "pyinstrument", "psutil", "orjson", "jinja2", "plotly")
    imported = _python(
        root,
        "import json, sys\nimport flamewatch_pytest\n"
        f"found = [m for m in sys.modules if m.split('.')[0] in {('flamewatch', *heavy)!r}]\n"
        "print(json.dumps({'code': 0, 'modules': found}))\n",
    )
    assert imported["modules"] == []


def _python(root: Path, script: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _fake_git(root: Path) -> None:
    """A repository whose HEAD is :data:`COMMIT`, as flamewatch reads it (no git needed)."""
    git = root / ".git"
    (git / "objects").mkdir(parents=True)
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (git / "refs" / "heads" / "main").write_text(COMMIT + "\n", encoding="utf-8")


def _production(root: Path, store: Database, version: str) -> None:
    """The project's app deployed as ``version``: flamewatch as production runs it."""
    spec = importlib.util.spec_from_file_location("deployed_shop", root / "shop" / "__init__.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app({"TESTING": True})
    # sampled as densely as a test run is, so that 20 requests of a few milliseconds leave an
    # aggregated profile that can name a function (at production's 10 ms, most leave none)
    fw = Flamewatch(app, database=str(store), version=version, sample_interval_ms=1.0)
    client = app.test_client()
    for n in range(20):
        assert client.get("/catalogue").status_code == 200
        assert client.get(f"/invoice/{n % 3 + 1}").status_code == 200
    assert fw.close()


def test_a_test_run_is_compared_with_a_production_version(
    store_db: Database, tmp_path: Path
) -> None:
    root = tmp_path / "shop"
    write_project(root)
    _fake_git(root)
    _production(root, store_db, "prod-1")
    set_slowdown(root, 3.0)
    out = _record(root, store_db)  # the version detected as in production, as a test run's
    label = COMMIT[:12] + "-tests"
    assert f"as version {label} (tests)" in out
    assert [tuple(r) for r in rows(store_db, "SELECT name, source FROM versions ORDER BY id")] == [
        ("prod-1", "config"),
        (label, "tests"),
    ]
    # by default a test run is checked against the test run before it: there is none
    checked = _check(store_db)
    assert checked.exit_code == 0, checked.output
    lines = checked.output.splitlines()
    assert lines[0].startswith(f"flamewatch check: {label} (tests), store ")
    assert lines[1:] == ["nothing to compare with: the store holds no earlier version of this kind"]
    # ... and against a deployment when asked
    checked = _check(store_db, "--version", label, "--against", "prod-1")
    assert checked.exit_code == 1, checked.output
    assert f"{label} (tests) against prod-1 (config)" in checked.output
    assert "  slower: invoice (all requests)" in checked.output
    assert "path: invoice \u2192 price_lines" in checked.output
    # a test run cannot add to a deployment's version
    refused = run_suite(root, f"--flamewatch={store_db}", "--flamewatch-version", "prod-1")
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout + refused.stderr
    assert "version 'prod-1' in" in refused.stderr
    assert "was recorded by a deployment (source 'config')" in refused.stderr
    # the next deployment is compared with the deployment before it, not with the test run
    set_slowdown(root, 1.0)
    _production(root, store_db, "prod-2")
    checked = _check(store_db)  # (its verdict is left alone: one run of each is noisy)
    assert checked.output.startswith("flamewatch check: prod-2 (config) against prod-1 (config)")
    # the report shows the test run apart from the deployments, and compares each with its kind
    page = (write_site(str(store_db), tmp_path / "site").parent / "versions.html").read_text(
        encoding="utf-8"
    )
    deployed, _, test_runs = page.partition('<h2 id="test-runs">Test runs</h2>')
    assert '<h2 id="deployed">Deployed versions</h2>' in deployed
    assert ">prod-1</a>" in deployed.split("</table>")[0]
    assert ">prod-2</a>" in deployed.split("</table>")[0]
    assert f">{label}</a>" not in deployed.split("</table>")[0]
    assert f">{label}</a>" in test_runs.split("</table>")[0]
    sections = test_runs.split("</table>", 1)[1].split("<h2 ")  # newest first
    assert sections[1].startswith('id="v-3">prod-2</h2>')
    assert "<td>prod-1</td>" in sections[1]  # its changes are against prod-1
    assert f"<td>{label}</td>" not in sections[1]
    assert sections[2].startswith(f'id="v-2">{label} <span class="muted">(test run)</span></h2>')
    assert "the test run before it to compare" in sections[2]  # no earlier test run
    # so do the findings of `flamewatch changes`: none pairs the test run with a deployment
    listed = CliRunner().invoke(main, ["changes", "-d", str(store_db), "--json"])
    assert listed.exit_code == 0, listed.output
    found = [f for f in json.loads(listed.output) if f["kind"] == "version"]
    assert all(label not in (f["version"], f["against"]) for f in found), found
    assert all(f["against"] == "prod-1" for f in found), found


_WATCHED = """\
from flamewatch.flask_plugin import Flamewatch

from shop import create_app


def create_watched_app():
    app = create_app({"TESTING": True, "FLAMEWATCH_DATABASE": "own.sqlite3"})
    Flamewatch(app, version="its-own-version")
    return app
"""

_CONFTEST = """\
import threading

import pytest
from werkzeug.serving import make_server

from shop import create_app

MODULE_APP = create_app({"TESTING": True})  # made when pytest imports this file


@pytest.fixture(scope="session")
def session_app():
    return create_app({"TESTING": True})


@pytest.fixture
def live_server():
    server = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()
"""

_TESTS = """\
from urllib.request import urlopen

import fw_prebuilt
from conftest import MODULE_APP
from shop import create_app
from shop.watched import create_watched_app


def test_module_app():
    client = MODULE_APP.test_client()
    for _ in range(3):
        assert client.get("/catalogue").status_code == 200


def test_session_app_first(session_app):
    for _ in range(2):
        assert session_app.test_client().get("/invoice/1").status_code == 200


def test_session_app_second(session_app):
    for _ in range(2):
        assert session_app.test_client().get("/invoice/2").status_code == 200


def test_watched_app():
    app = create_watched_app()
    for _ in range(2):
        assert app.test_client().get("/catalogue").status_code == 200


def test_live_server(live_server):
    for _ in range(3):
        with urlopen(live_server + "/invoice/3", timeout=30) as response:
            assert response.status == 200


def test_an_app_keeps_its_routes_and_commands():
    app = create_app()
    assert app.test_client().get("/catalogue").status_code == 200
    assert sorted(r.endpoint for r in app.url_map.iter_rules()) == [
        "catalogue", "invoice", "static"
    ]
    assert app.cli.commands == {}


def test_an_app_attached_before_the_run():
    for _ in range(2):
        assert fw_prebuilt.APP.test_client().get("/").status_code == 200
"""


def _prebuilt(database: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """An app that got flamewatch before the test run began, importable as ``fw_prebuilt``."""
    app = Flask("prebuilt")

    @app.get("/")
    def hello() -> str:
        return "hello"

    Flamewatch(app, database=str(database), version="prebuilt")
    module = types.ModuleType("fw_prebuilt")
    module.APP = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fw_prebuilt", module)
    return app


def test_every_app_a_suite_serves_is_recorded_whatever_made_it(
    pytester: pytest.Pytester,
    store_db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLAMEWATCH_PYTEST_STORE", raising=False)
    root = pytester.path
    write_project(root)
    (root / "shop" / "watched.py").write_text(_WATCHED, encoding="utf-8")
    (root / "tests" / "conftest.py").write_text(_CONFTEST, encoding="utf-8")
    (root / "tests" / "test_shop.py").unlink()
    (root / "tests" / "test_apps.py").write_text(_TESTS, encoding="utf-8")
    prebuilt = _prebuilt(tmp_path / "prebuilt.sqlite3", monkeypatch)
    call = Flask.__call__

    result = pytester.runpytest_inprocess(
        f"--flamewatch={store_db}", "--flamewatch-version", "in-process", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(
        [
            "flamewatch: 13 requests of 5 apps recorded in * as version in-process (tests)",
            "flamewatch: app 'prebuilt' had flamewatch before the test run began: its requests"
            " go to the store its own settings name",
        ]
    )
    node = "tests/test_apps.py::"
    assert _groups(store_db) == {
        (node + "test_module_app", "catalogue"): 3,  # an app made at import time
        (node + "test_session_app_first", "invoice"): 2,  # one app, two tests
        (node + "test_session_app_second", "invoice"): 2,
        (node + "test_watched_app", "catalogue"): 2,  # its own Flamewatch(app) followed the run
        (node + "test_live_server", "invoice"): 3,  # served on the server's threads
        (node + "test_an_app_keeps_its_routes_and_commands", "catalogue"): 1,
    }
    assert not list(root.rglob("own.sqlite3"))
    # the app attached before the run kept its own store, Flask is as it was, and no thread
    # of the run is left (the leak detector checks that)
    assert prebuilt.extensions["flamewatch"].close()
    (own,) = rows(tmp_path / "prebuilt.sqlite3", "SELECT count(*) AS n FROM requests")
    assert own["n"] == 2
    assert Flask.__call__ is call
    assert extension.recording is None
