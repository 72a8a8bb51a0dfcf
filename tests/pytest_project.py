"""A small project with an app factory and its own pytest suite, written into a folder.

For the pytest plugin's tests and ``benchmarks/bench_pytest_gate.py``: the project knows
nothing of flamewatch; its suite runs with the plugin's ``--flamewatch`` or without. Its views
wait (``time.sleep``) in named functions, so their durations hold on a loaded machine, and
:func:`set_slowdown` makes ``price_lines`` -- and with it the ``invoice`` view -- slower. The
waits are long enough (12 and 20 ms) that a busy scheduler's lateness, a millisecond or two,
stays well under the 20 % a verdict needs: with 4 and 5 ms, one unchanged run in twenty on
this project's loaded 2-core machine came out slower.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flamewatch.sampler.version import GIT_ENV_VARIABLES

__all__ = ["SUITE_TESTS", "project_bytes", "run_suite", "set_slowdown", "write_project"]

#: requests each test of the suite sends (the report compares endpoints with 10 or more)
REQUESTS = 15
#: the suite's tests, by node id
SUITE_TESTS = ("tests/test_shop.py::test_catalogue", "tests/test_shop.py::test_invoice")

_SHOP = '''\
"""A small shop: an app factory and two views."""

import time

from flask import Flask, jsonify

#: how many times slower price_lines is than it was
SLOWDOWN = 1.0


def load_catalogue():
    time.sleep(0.020)
    return ["tea", "cake", "scones"]


def price_lines(count):
    time.sleep(0.012 * SLOWDOWN)
    return [round(2.5 * n, 2) for n in range(1, count + 1)]


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(config or {})

    @app.get("/catalogue")
    def catalogue():
        return jsonify(load_catalogue())

    @app.get("/invoice/<int:count>")
    def invoice(count):
        return jsonify(total=sum(price_lines(count)))

    return app
'''

_CONFTEST = """\
import pytest

from shop import create_app


@pytest.fixture
def app():
    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()
"""

_TESTS = f"""\
REQUESTS = {REQUESTS}


def test_catalogue(client):
    for _ in range(REQUESTS):
        assert client.get("/catalogue").json == ["tea", "cake", "scones"]


def test_invoice(client):
    for n in range(REQUESTS):
        response = client.get(f"/invoice/{{n % 3 + 1}}")
        assert response.status_code == 200
"""

_PYPROJECT = """\
[project]
name = "shop"
version = "1.0"

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
"""


def write_project(root: Path) -> None:
    """The project's files under ``root`` (created)."""
    files = {
        "shop/__init__.py": _SHOP,
        "tests/conftest.py": _CONFTEST,
        "tests/test_shop.py": _TESTS,
        "pyproject.toml": _PYPROJECT,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def set_slowdown(root: Path, factor: float) -> None:
    """Make ``price_lines`` ``factor`` times as slow as it was written."""
    path = root / "shop" / "__init__.py"
    text = path.read_text(encoding="utf-8")
    start = text.index("SLOWDOWN = ")
    end = text.index("\n", start)
    path.write_text(f"{text[:start]}SLOWDOWN = {factor!r}{text[end:]}", encoding="utf-8")


def project_bytes(root: Path) -> dict[str, bytes]:
    """Every file of the project (caches and stores aside), by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".sqlite3" not in path.name
    }


def run_suite(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the project's suite with this interpreter's pytest, in a fresh process, with the
    plugin's settings only from ``args`` and ``env`` (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEWATCH_")}
    for name in GIT_ENV_VARIABLES:  # the version is what a test says it is
        clean.pop(name, None)
    clean["PYTHONDONTWRITEBYTECODE"] = "1"  # an edited module must not come from a stale .pyc
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
