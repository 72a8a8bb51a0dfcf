"""Schema 5 against the code before it, side by side on the same stores: what
``bench_scale.py`` measures (each live dashboard page uncached, ``flamewatch report``, their
peak RSS), for two copies of flamewatch taking turns at the same load.

"Before" is the tree of a git revision (``--before``, default ``d7744f3``: main before schema
5), exported with ``git archive`` and imported ahead of the installed package through
``PYTHONPATH`` (as ``bench_reads.py`` does); it reads each store as it is (schema 4). "After"
is this tree; it reads a copy of each store migrated to schema 5 with ``flamewatch migrate``
(the time of that migration is reported too). The stores are ``bench_scale.py``'s, given by
path (``--stores``), e.g. those its ``--dir`` caches, built by the code before schema 5.

Each round runs, for each store and each copy in turn, one child process timing every
dashboard page once (``bench_scale.py --child-dashboard``) and one ``flamewatch report
--quiet``; the figures are medians of ``--rounds`` rounds (default 3).

Run from the repository root::

    python benchmarks/bench_scale_compare.py --stores S1E5.sqlite3,S1E6.sqlite3 \\
        --json bench-out/bench_scale_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_reads import export
from bench_scale import PAGES, run_child
from scale_store import BUSIEST_ENDPOINT

NAME = "bench_scale_compare"
HERE = Path(__file__).resolve().parent
REPORT = "import sys; from flamewatch.reports.cli import main; sys.argv[0] = 'flamewatch'; main()"


def _env(pythonpath: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return env


def _child(command: list[str], pythonpath: str) -> tuple[float, float, str]:
    """``bench_scale.run_child`` with ``PYTHONPATH`` set for the child."""
    before = dict(os.environ)
    os.environ.update(_env(pythonpath))
    try:
        return run_child(command)
    finally:
        os.environ.clear()
        os.environ.update(before)


def pages(store: Path, pythonpath: str) -> tuple[dict[str, float], float]:
    """Each page's milliseconds (one run each) in a child attached to a copy of ``store``."""
    with tempfile.TemporaryDirectory(dir=store.parent) as tmp:
        work = (Path(tmp) / "store.sqlite3").absolute()
        shutil.copyfile(store, work)
        command = [sys.executable, str(HERE / "bench_scale.py"), "--child-dashboard", str(work)]
        _, peak, out = _child([*command, BUSIEST_ENDPOINT, "--repeat", "1"], pythonpath)
    found = json.loads(out.strip().splitlines()[-1])
    return {label: found[label]["ms"] for label in PAGES}, peak


def report(store: Path, pythonpath: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", REPORT, "report", "-d", str(store)]
        seconds, peak, _ = _child([*command, "-o", str(Path(tmp) / "site"), "--quiet"], pythonpath)
    return seconds, peak


def migrated(store: Path, into: Path) -> tuple[Path, float]:
    """A copy of ``store`` migrated to this tree's schema, and the seconds it took."""
    copy = into / f"{store.stem}-v5.sqlite3"
    shutil.copyfile(store, copy)
    flamewatch = str(Path(sys.executable).with_name("flamewatch"))
    start = time.perf_counter()
    subprocess.run([flamewatch, "migrate", "-d", str(copy)], check=True, capture_output=True)
    return copy, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", required=True, help="schema-4 stores, comma separated")
    parser.add_argument("--before", default="d7744f3", help="git revision read as 'before'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench-out") / f"{NAME}.json")
    args = parser.parse_args(argv)
    stores = [Path(s).absolute() for s in args.stores.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-compare-", dir=stores[0].parent))
    load_start = os.getloadavg()
    try:
        before_path = str(export(args.before, tmp / "before"))
        after = {store: migrated(store, tmp) for store in stores}
        runs: dict[str, dict[str, dict[str, list[float]]]] = {}
        for _ in range(args.rounds):
            for store in stores:
                copies = {"before": (store, before_path), "after": (after[store][0], "")}
                for label, (path, pythonpath) in copies.items():
                    found = runs.setdefault(store.name, {}).setdefault(label, {})
                    times, peak = pages(path, pythonpath)
                    for page, ms in times.items():
                        found.setdefault(f"{page}, ms", []).append(ms)
                    found.setdefault("dashboard peak RSS, MiB", []).append(peak)
                    seconds, peak = report(path, pythonpath)
                    found.setdefault("report, s", []).append(seconds)
                    found.setdefault("report peak RSS, MiB", []).append(peak)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {
        name: {label: {k: statistics.median(v) for k, v in f.items()} for label, f in by.items()}
        for name, by in runs.items()
    }
    for store in stores:
        print(f"\n{store.name}: migrated to schema 5 in {after[store][1]:.1f} s")
        print(f"{'':<28} {'before (' + args.before + ')':>18} {'after':>10}")
        found = medians[store.name]
        for key, value in found["after"].items():
            print(f"{key:<28} {found['before'][key]:>18.1f} {value:>10.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": NAME,
        "before": args.before,
        "rounds": args.rounds,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "migration_s": {store.name: after[store][1] for store in stores},
        "runs": runs,
        "medians": medians,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
