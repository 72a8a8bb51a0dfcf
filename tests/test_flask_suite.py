"""Flask's own test suite passes with flamewatch attached to every app it creates.

The suite comes from the sdist of the installed Flask (fetched with pip; the test is skipped,
saying why, only when pip cannot reach it) and runs twice in a virtual environment that sees
this one's packages plus the pytest release Flask's lock file pins: once as it is, once with
``tests/flask_suite/flamewatch_everywhere.py`` loaded. A test may fail with flamewatch only if
it fails without it too, or if it lists the app's routes (flamewatch adds its dashboard's).
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import sysconfig
import tarfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).parent / "flask_suite"
#: Flask's tests that list the routes of an app: flamewatch's dashboard routes are among them
LISTS_ROUTES = re.compile(r"^tests/test_cli\.py::TestRoutes::")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def flask_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed Flask's source distribution, unpacked."""
    dest = tmp_path_factory.mktemp("flask-sdist")
    release = version("flask")
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"flask=={release}",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(dest),
            "-q",
        ]
    )
    archives = list(dest.glob("flask-*.tar.gz"))
    if done.returncode != 0 or not archives:
        pytest.skip(f"pip cannot fetch Flask {release}'s sdist: {done.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(dest, filter="data")
    return dest / f"flask-{release}"


@pytest.fixture(scope="module")
def suite_python(flask_sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv seeing this environment's packages, with the pytest Flask pins and dotenv."""
    venv = tmp_path_factory.mktemp("flask-suite-venv")
    made = _run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    ours = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "zz_outer_env.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n", encoding="utf-8"
    )
    pinned = re.search(
        r'name = "pytest", version = "([\d.]+)".*python_full_version >= \'3\.10\'',
        (flask_sdist / "uv.lock").read_text(encoding="utf-8"),
    )
    pytest_spec = f"pytest=={pinned.group(1)}" if pinned else "pytest<9.1"
    installed = _run([str(python), "-m", "pip", "install", "-q", pytest_spec, "python-dotenv"])
    if installed.returncode != 0:
        pytest.skip(f"pip cannot install {pytest_spec}: {installed.stderr.strip()[-300:]}")
    return python


def _outcomes(python: Path, sdist: Path, report: Path, *extra: str, **env: str) -> dict[str, str]:
    done = _run(
        [
            str(python),
            "-m",
            "pytest",
            "tests",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            *extra,
        ],
        cwd=sdist,
        **env,
    )
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "skipped" if "skipped" in kinds else "passed"
        if kinds & {"failure", "error"}:
            outcome = "failed"
        outcomes[_node_id(sdist, case.get("classname", ""), case.get("name", ""))] = outcome
    return outcomes


def _node_id(sdist: Path, classname: str, name: str) -> str:
    """pytest's node id from JUnit's dotted ``module[.Class]`` and the test's name."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut]) + ".py"
        if (sdist / module).is_file():
            return "::".join([module, *parts[cut:], name])
    return f"{classname}::{name}"


def test_flasks_own_suite_passes_with_flamewatch_on_every_app(
    flask_sdist: Path, suite_python: Path, tmp_path: Path
) -> None:
    plain = _outcomes(suite_python, flask_sdist, tmp_path / "plain.xml")
    database = tmp_path / "suite.sqlite3"
    watched = _outcomes(
        suite_python,
        flask_sdist,
        tmp_path / "watched.xml",
        "-p",
        "flamewatch_everywhere",
        PYTHONPATH=str(PLUGIN_DIR),
        FLAMEWATCH_SUITE_DATABASE=str(database),
    )
    assert set(watched) == set(plain)
    assert sum(outcome == "passed" for outcome in watched.values()) > 400
    broken = sorted(
        node
        for node, outcome in watched.items()
        if outcome == "failed" and plain[node] != "failed" and not LISTS_ROUTES.match(node)
    )
    assert not broken, broken
    assert watched["tests/test_basic.py::test_app_freed_on_zero_refcount"] == "passed"
    assert [n for n in watched if LISTS_ROUTES.match(n)], "no route-listing test was recognised"
    # flamewatch really was there: the suite's requests are in the store
    with sqlite3.connect(database) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM requests").fetchone()
    assert stored > 300
