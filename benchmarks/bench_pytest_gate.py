"""How many runs of a suite ``flamewatch check`` needs for a verdict, and how often it is wrong.

The project is ``tests/pytest_project.py``'s small shop: two views that wait in named functions
(``catalogue`` about 20 ms, ``invoice`` about 12 ms in ``price_lines``) and a suite of two tests
sending 15 requests each. Each run is the real thing: ``python -m pytest --flamewatch=STORE``
in a fresh process, on whatever else this machine is doing.

A trial, for ``k`` runs per version: a fresh store; the suite run ``k`` times as version
``base``; then ``k`` times as each candidate -- unchanged, ``price_lines`` 1.5x as slow, 3x as
slow -- each its own version; then ``flamewatch check --version CANDIDATE --against base``
(:func:`~flamewatch.reports.check.check_versions`, the command's own code) for each. Counted
over the trials:

- **false alarms**: checks of the unchanged candidate that fail (any endpoint slower), and
  checks of the slowed ones that flag ``catalogue``, which did not change;
- **detections**: checks of a slowed candidate that flag ``invoice`` as slower, and of those,
  the ones naming ``price_lines`` as the culprit.

Run from the repository root::

    python benchmarks/bench_pytest_gate.py                      # 10 trials, k = 1, 2, 3
    python benchmarks/bench_pytest_gate.py --trials 3 --runs 1  # smoke run

Results are printed and written to ``bench-out/bench_pytest_gate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pytest_project import run_suite, set_slowdown, write_project

from flamewatch.reports.check import CheckResult, check_versions

NAME = "bench_pytest_gate"
SLOWED, STEADY, CULPRIT = "invoice", "catalogue", "price_lines"


def record(root: Path, store: Path, label: str, factor: float, runs: int) -> None:
    set_slowdown(root, factor)
    for _ in range(runs):
        done = run_suite(root, f"--flamewatch={store}", "--flamewatch-version", label)
        if done.returncode != 0:
            raise SystemExit(f"the suite failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def outcome(result: CheckResult) -> dict[str, Any]:
    """What one check said: fails or not, what it flagged, the culprit of the slowed view."""
    flagged = {f.endpoint: f.verdict for f in result.findings if f.group is None}
    culprit = next(
        (
            f.path[-1]
            for f in result.findings
            if f.endpoint == SLOWED and f.group is None and f.path
        ),
        None,
    )
    ratios = {c.endpoint: [c.ratio, c.ratio_low, c.ratio_high, c.p_value] for c in result.changes}
    return {
        "fails": bool(result.failures("slower")),
        "flagged": flagged,
        "group_findings": sum(f.group is not None for f in result.findings),
        "culprit": culprit,
        "changes": ratios,
    }


def trial(work: Path, runs: int, factors: list[float]) -> dict[str, dict[str, Any]]:
    root = work / "shop"
    write_project(root)
    store = work / "store.sqlite3"
    record(root, store, "base", 1.0, runs)
    for factor in factors:
        record(root, store, f"x{factor:g}", factor, runs)
    return {
        f"x{factor:g}": outcome(check_versions(str(store), f"x{factor:g}", "base"))
        for factor in factors
    }


def summarize(trials: list[dict[str, dict[str, Any]]], factors: list[float]) -> dict[str, Any]:
    summary: dict[str, Any] = {"trials": len(trials)}
    for factor in factors:
        found = [t[f"x{factor:g}"] for t in trials]
        if factor == 1.0:
            summary["false_alarms"] = sum(o["fails"] for o in found)
        else:
            key = f"x{factor:g}"
            summary[f"{key}_detected"] = sum(o["flagged"].get(SLOWED) == "slower" for o in found)
            summary[f"{key}_culprit_named"] = sum(o["culprit"] == CULPRIT for o in found)
            summary[f"{key}_steady_flagged"] = sum(STEADY in o["flagged"] for o in found)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per k (default 10)")
    parser.add_argument("--runs", default="1,2,3", help="runs per version, k (default 1,2,3)")
    parser.add_argument("--factors", default="1,1.5,3", help="slowdowns (default 1,1.5,3)")
    options = parser.parse_args(argv)
    factors = [float(f) for f in options.factors.split(",")]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "factors": factors, "by_runs": {}}
    started = time.perf_counter()
    for runs in (int(k) for k in options.runs.split(",")):
        trials = []
        for n in range(options.trials):
            with tempfile.TemporaryDirectory(prefix="fw-bench-gate-") as tmp:
                trials.append(trial(Path(tmp), runs, factors))
            said = {
                k: ("FAIL " if o["fails"] else "pass ")
                + str(o["flagged"] or "")
                + (o["culprit"] or "")
                for k, o in trials[-1].items()
            }
            print(f"k={runs} trial {n + 1}: {said}  load {os.getloadavg()[0]:.1f}", flush=True)
        summary = summarize(trials, factors)
        results["by_runs"][str(runs)] = {"summary": summary, "trials": trials}
        print(f"k={runs}: {summary}", flush=True)
    results["seconds"] = round(time.perf_counter() - started)
    results["load_average_at_end"] = os.getloadavg()
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        "runs per version | unchanged: false alarms | 1.5x: detected (culprit named) |"
        " 3x: detected (culprit named) | unchanged view flagged"
    )
    for runs, found in results["by_runs"].items():
        s = found["summary"]
        print(
            f"{runs} | {s.get('false_alarms', '-')}/{s['trials']}"
            f" | {s.get('x1.5_detected', '-')} ({s.get('x1.5_culprit_named', '-')})"
            f" | {s.get('x3_detected', '-')} ({s.get('x3_culprit_named', '-')})"
            f" | {s.get('x1.5_steady_flagged', 0) + s.get('x3_steady_flagged', 0)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
