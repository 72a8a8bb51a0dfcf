"""What ``pytest --flamewatch`` costs a test suite: Flask's own suite, with and without it.

Flask's test suite comes from the sdist of the installed Flask (fetched with ``pip download``,
as ``tests/test_flask_suite.py`` does) and runs in a virtual environment that sees this one's
packages -- flamewatch's pytest plugin included, through its entry point -- plus the pytest
release Flask's lock file pins. The suite runs ``--runs`` times each way, alternately (plain,
recorded, plain, ...), after one uncounted run each way (the first compiles every module),
so that the machine's load drifts alike for both; each run is a fresh ``python -m pytest tests
-q -p no:cacheprovider`` process, timed from start to exit (pytest's own time, which leaves out
the interpreter's start and the plugins' import, is kept too). With the plugin, every run
records into a fresh SQLite store, and the requests it holds are counted.

Figures: the median wall time of each, their ratio and difference, the median CPU time (user
and system, every thread of the run: what a busy CI machine's other jobs do not inflate as
much as the wall time), and the requests recorded per run. Run from the repository root::

    python benchmarks/bench_pytest_cost.py             # 5 runs each way
    python benchmarks/bench_pytest_cost.py --runs 2    # quicker

Results are printed and written to ``bench-out/bench_pytest_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

NAME = "bench_pytest_cost"


def _run(cmd: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLAMEWATCH_")}
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False, env=clean | env
    )


def flask_suite(work: Path) -> tuple[Path, Path]:
    """Flask's sdist unpacked under ``work``, and a venv's python to run its suite."""
    release = version("flask")
    fetched = _run(
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
            str(work),
            "-q",
        ]
    )
    archives = list(work.glob("flask-*.tar.gz"))
    if fetched.returncode != 0 or not archives:
        raise SystemExit(f"pip cannot fetch Flask {release}'s sdist: {fetched.stderr[-500:]}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(work, filter="data")
    sdist = work / f"flask-{release}"
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)]).check_returncode()
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    ours = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "zz_outer_env.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n", encoding="utf-8"
    )
    pinned = re.search(
        r'name = "pytest", version = "([\d.]+)".*python_full_version >= \'3\.10\'',
        (sdist / "uv.lock").read_text(encoding="utf-8"),
    )
    spec = f"pytest=={pinned.group(1)}" if pinned else "pytest<9.1"
    _run([str(python), "-m", "pip", "install", "-q", spec, "python-dotenv"]).check_returncode()
    return sdist, python


def run_once(python: Path, sdist: Path, store: Path | None) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system, all threads) of one run of the suite, and
    its last output line."""
    args = [] if store is None else [f"--flamewatch={store}", "--flamewatch-version", "bench"]
    cpu = _children_cpu()
    start = time.perf_counter()
    done = _run(
        [str(python), "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", *args], sdist
    )
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    lines = done.stdout.strip().splitlines()
    if done.returncode not in (0, 1) or not lines:
        raise SystemExit(f"the suite did not run ({done.returncode}):\n{done.stdout[-2000:]}")
    return elapsed, cpu, lines[-1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pytest_seconds(summary: str) -> float:
    """The time pytest reports on its last line (``... in 3.73s``)."""
    found = re.search(r" in ([\d.]+)s", summary)
    return float(found.group(1)) if found else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs each way (default 5)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fw-bench-cost-") as tmp:
        work = Path(tmp)
        sdist, python = flask_suite(work)
        plain: list[float] = []
        recorded: list[float] = []
        inner: dict[str, list[float]] = {"plain": [], "flamewatch": []}
        cpu: dict[str, list[float]] = {"plain": [], "flamewatch": []}
        requests: list[int] = []
        outcomes: dict[str, str] = {}
        run_once(python, sdist, None)  # warm-up: compiles Flask's, pytest's and our modules
        run_once(python, sdist, work / "warm-up.sqlite3")
        for n in range(options.runs):
            seconds, used, outcomes["plain"] = run_once(python, sdist, None)
            plain.append(seconds)
            cpu["plain"].append(used)
            inner["plain"].append(_pytest_seconds(outcomes["plain"]))
            store = work / f"run-{n}.sqlite3"
            seconds, used, outcomes["flamewatch"] = run_once(python, sdist, store)
            recorded.append(seconds)
            cpu["flamewatch"].append(used)
            inner["flamewatch"].append(_pytest_seconds(outcomes["flamewatch"]))
            with sqlite3.connect(store) as conn:
                requests.append(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
            print(
                f"run {n + 1}: plain {plain[-1]:.2f} s ({cpu['plain'][-1]:.2f} s CPU),"
                f" --flamewatch {recorded[-1]:.2f} s ({cpu['flamewatch'][-1]:.2f} s CPU)",
                flush=True,
            )
    base, watched = statistics.median(plain), statistics.median(recorded)
    result: dict[str, Any] = {
        "flask": version("flask"),
        "runs": options.runs,
        "plain_s": plain,
        "flamewatch_s": recorded,
        "median_plain_s": round(base, 2),
        "median_flamewatch_s": round(watched, 2),
        "ratio": round(watched / base, 3),
        "added_s": round(watched - base, 2),
        "cpu_s": cpu,
        "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "cpu_ratio": round(
            statistics.median(cpu["flamewatch"]) / statistics.median(cpu["plain"]), 3
        ),
        "pytest_reported_s": inner,
        "median_pytest_reported_s": {k: statistics.median(v) for k, v in inner.items()},
        "requests_recorded": requests,
        "outcomes": outcomes,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(
        f"Flask {result['flask']}'s suite: {base:.2f} s plain, {watched:.2f} s with --flamewatch"
        f" (median of {options.runs}): x{result['ratio']:.2f}, +{result['added_s']:.2f} s;"
        f" {statistics.median(requests):.0f} requests recorded per run"
    )
    used = result["median_cpu_s"]
    print(
        f"CPU time (user + system, median): {used['plain']:.2f} s plain,"
        f" {used['flamewatch']:.2f} s with --flamewatch: x{result['cpu_ratio']:.2f}"
    )
    own = result["median_pytest_reported_s"]
    print(
        f"pytest's own time (median): {own['plain']:.2f} s plain,"
        f" {own['flamewatch']:.2f} s with --flamewatch"
    )
    print(f"outcomes: {outcomes}")
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
