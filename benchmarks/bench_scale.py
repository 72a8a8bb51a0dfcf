"""Does flamewatch answer as fast at 10^7 requests as at 10^5? The proof of issue 15.

For each store size (default 10^5, 10^6 and 10^7 requests; :mod:`scale_store` writes them
through the writer's real code path, and caches them in ``--dir``), side by side:

* **dashboard**: the time of each live dashboard page that reads the store -- index,
  performance, versions, utilization, the busiest endpoint's page and the outliers list --
  with its cache off (``dashboard_cache_s = 0``, as ``bench_dashboard.py`` does), through the
  Flask test client, in a child process attached to a copy of the store;
* **report**: the wall time of ``flamewatch report --quiet`` (a child process; the stores
  hold no aggregated profiles, so this is the report without them);
* **memory**: the peak RSS of each of those child processes (``ru_maxrss`` from ``os.wait4``,
  so each child's own high-water mark);
* **storage**: the store's size on disk, and per 10^6 requests the bytes of the raw rows (the
  ``requests`` table and its indexes) and of the histogram tables (schema 4's ``latency``,
  ``latency_hourly``, ``latency_total``, ``traffic``, schema 5's ``latency_version``,
  ``group_hits``, ``latency_daily``, ``traffic_daily``, ``hits_hourly``, ``process_hits``, and
  their indexes), from SQLite's ``dbstat`` table.

A timing is the median of up to ``--repeat`` runs (default 3), fewer once the runs of one
measurement took ``--budget`` seconds (default 60): at least one run. The issue's targets are
printed against the figures: dashboard pages <= 100 ms at 10^7 and within 2x of their 10^5
time; ``flamewatch report`` <= 5 s at 10^7 and within 2x of 10^5; peak memory flat (read here
as within :data:`FLAT_MEMORY` x of 10^5). Sizes other than 10^5 and 10^7 are compared with the
smallest and largest measured.

Run from the repository root::

    python benchmarks/bench_scale.py --sizes 1e5,1e6 --dir bench-out/scale
    nohup python benchmarks/bench_scale.py --sizes 1e7 --dir bench-out/scale --build-only &
    python benchmarks/bench_scale.py --dir bench-out/scale --json bench-out/bench_scale.json

Building costs about 20-25 µs a request on one core today (10^7: ~4 minutes); progress is
printed to stderr. Results: a table on stdout and JSON (``--json``, default
``bench-out/bench_scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.site import endpoint_page
from flamewatch.sampler.store.backfill import HISTOGRAM_TABLES

sys.path.insert(0, str(Path(__file__).parent))

from scale_store import BUSIEST_ENDPOINT, CHUNK, cached_store, fingerprint

NAME = "bench_scale"
RAW_TABLES = ("requests",)
#: the dashboard pages timed: label -> path under /flamewatch/ ("{endpoint}": an endpoint's page)
PAGES = {
    "index": "",
    "performance": "performance.html",
    "versions": "versions.html",
    "utilization": "utilization.html",
    "endpoint": "{endpoint}",
    "outliers": "outliers.html",
}
PAGE_TARGET_MS = 100.0
REPORT_TARGET_S = 5.0
GROWTH_TARGET = 2.0  # the largest store's time within this factor of the smallest's
FLAT_MEMORY = 1.5  # "flat": the largest store's peak RSS within this factor of the smallest's


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _progress(done: int, total: int, seconds: float) -> None:
    if done == total or done % (10 * CHUNK) < CHUNK:  # every ~200,000 requests
        rate = done / seconds if seconds else 0.0
        left = (total - done) / rate if rate else 0.0
        _say(f"  built {done:,} / {total:,} at {rate:,.0f} requests/s, ~{left:.0f} s left")


def timed_runs(run: Callable[[], float], repeat: int, budget_s: float) -> list[float]:
    """Seconds of up to ``repeat`` runs of ``run`` (which returns its own seconds), fewer once
    they took ``budget_s`` together; at least one."""
    runs = [run()]
    while len(runs) < repeat and sum(runs) < budget_s:
        runs.append(run())
    return runs


def run_child(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of a child process; fails if it fails."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode})")
    return seconds, usage.ru_maxrss / 1024, text  # ru_maxrss: KiB on Linux


# -- what is measured -----------------------------------------------------------------------------


def storage(path: Path, requests: int) -> dict[str, Any]:
    """Bytes on disk: the file, and per table (its indexes included) from ``dbstat``."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
        tables: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)  # sqlite_schema is not in sqlite_master
            tables[table] = tables.get(table, 0) + size
    finally:
        conn.close()
    raw = sum(tables.get(t, 0) for t in RAW_TABLES)
    histograms = sum(tables.get(t, 0) for t in HISTOGRAM_TABLES)
    return {
        "file_bytes": path.stat().st_size,
        "tables_bytes": tables,
        "raw_bytes": raw,
        "histogram_bytes": histograms,
        "raw_bytes_per_1e6": round(raw * 1e6 / requests),
        "histogram_bytes_per_1e6": round(histograms * 1e6 / requests),
    }


def report(path: Path, repeat: int, budget_s: float) -> dict[str, Any]:
    """``flamewatch report`` on the store: median wall seconds, the runs, peak RSS."""
    flamewatch = str(Path(sys.executable).with_name("flamewatch"))
    peaks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:

        def run() -> float:
            site = Path(tmp) / "site"
            shutil.rmtree(site, ignore_errors=True)
            seconds, peak, _ = run_child(
                [flamewatch, "report", "-d", str(path), "-o", str(site), "--quiet"]
            )
            peaks.append(peak)
            return seconds

        runs = timed_runs(run, repeat, budget_s)
    return {"seconds": statistics.median(runs), "runs": runs, "peak_rss_mib": max(peaks)}


def dashboard(path: Path, endpoint: str, repeat: int, budget_s: float) -> dict[str, Any]:
    """Each page's median milliseconds (cache off), in a child attached to a copy of the
    store (the app records its own process and routes in it); the child's peak RSS."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        # absolute: Flamewatch resolves a relative database path against the app's instance
        # folder, where the child would read a new, empty store
        work = (Path(tmp) / "store.sqlite3").absolute()
        shutil.copyfile(path, work)
        command = [sys.executable, __file__, "--child-dashboard", str(work), endpoint]
        _, peak, out = run_child([*command, "--repeat", str(repeat), "--budget", str(budget_s)])
    pages: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {"pages": pages, "peak_rss_mib": peak}


def child_dashboard(database: Path, endpoint: str, repeat: int, budget_s: float) -> int:
    """In the child: time each dashboard page through the test client; print JSON."""
    app = Flask("bench_scale", instance_path=tempfile.mkdtemp())
    app.config.update(TESTING=True)

    @app.get("/")
    def index() -> str:
        return "hello"

    fw = Flamewatch(app, database=str(database), version="bench", dashboard_cache_s=0)
    client = app.test_client()
    client.get("/")  # the app serves: its agent starts and registers
    fw.flush(timeout=60)
    results: dict[str, Any] = {}
    for label, page in PAGES.items():
        path = "/flamewatch/" + page.format(endpoint=endpoint_page(endpoint))

        def run(path: str = path) -> float:
            start = time.perf_counter()
            response = client.get(path)
            seconds = time.perf_counter() - start
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code}")
            return seconds

        runs = timed_runs(run, repeat, budget_s)
        results[label] = {
            "path": path,
            "ms": statistics.median(runs) * 1000,
            "runs_ms": [r * 1000 for r in runs],
        }
    fw.close()
    print(json.dumps(results))
    return 0


def measure(requests: int, args: argparse.Namespace) -> dict[str, Any]:
    _say(f"{requests:,} requests: the store")
    path, built = cached_store(args.dir, requests, _progress)
    verb = "reused" if built["reused"] else "built"
    _say(f"  {verb} {path} ({built['requests_per_s']:,} requests/s, {built['build_s']} s)")
    result: dict[str, Any] = {"requests": requests, "store": str(path), "build": built}
    if args.build_only:
        return result
    result["storage"] = storage(path, requests)
    _say(f"{requests:,} requests: flamewatch report")
    result["report"] = report(path, args.repeat, args.budget)
    _say(f"{requests:,} requests: dashboard pages")
    result["dashboard"] = dashboard(path, BUSIEST_ENDPOINT, args.repeat, args.budget)
    return result


# -- the table and the targets --------------------------------------------------------------------


def rows(results: list[dict[str, Any]]) -> list[tuple[str, list[float], str]]:
    """(label, value per size, unit) of every figure measured."""
    table: list[tuple[str, list[float], str]] = [
        ("build (through the writer)", [r["build"]["build_s"] for r in results], "s"),
    ]
    for page in results[0]["dashboard"]["pages"]:
        figures = [r["dashboard"]["pages"][page]["ms"] for r in results]
        table.append((f"dashboard {page}", figures, "ms"))
    table += [
        ("dashboard peak RSS", [r["dashboard"]["peak_rss_mib"] for r in results], "MiB"),
        ("flamewatch report", [r["report"]["seconds"] for r in results], "s"),
        ("report peak RSS", [r["report"]["peak_rss_mib"] for r in results], "MiB"),
        ("store on disk", [r["storage"]["file_bytes"] / 2**20 for r in results], "MiB"),
        ("histogram tables", [r["storage"]["histogram_bytes"] / 2**20 for r in results], "MiB"),
        (
            "raw rows / 10^6 requests",
            [r["storage"]["raw_bytes_per_1e6"] / 2**20 for r in results],
            "MiB",
        ),
        (
            "histograms / 10^6 requests",
            [r["storage"]["histogram_bytes_per_1e6"] / 2**20 for r in results],
            "MiB",
        ),
    ]
    return table


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, the largest store measured against the smallest."""
    small, large = results[0], results[-1]
    lines = []

    def check(
        label: str, first: float, last: float, limit: float | None, unit: str, growth: float
    ) -> None:
        ratio = last / first if first else float("inf")
        parts = [f"{label}: {last:,.1f} {unit} at {large['requests']:,}"]
        if limit is not None:
            parts.append(f"<= {limit:g} {unit}: {'ok' if last <= limit else 'MISSED'}")
        parts.append(
            f"x{ratio:.2f} of {small['requests']:,} (<= x{growth:g}:"
            f" {'ok' if ratio <= growth else 'MISSED'})"
        )
        lines.append("; ".join(parts))

    for page, figure in large["dashboard"]["pages"].items():
        first = small["dashboard"]["pages"][page]["ms"]
        check(f"dashboard {page}", first, figure["ms"], PAGE_TARGET_MS, "ms", GROWTH_TARGET)
    check(
        "flamewatch report",
        small["report"]["seconds"],
        large["report"]["seconds"],
        REPORT_TARGET_S,
        "s",
        GROWTH_TARGET,
    )
    for what in ("dashboard", "report"):
        first, last = small[what]["peak_rss_mib"], large[what]["peak_rss_mib"]
        check(f"{what} peak RSS", first, last, None, "MiB", FLAT_MEMORY)
    return lines


def print_table(results: list[dict[str, Any]]) -> None:
    sizes = [f"{r['requests']:,}" for r in results]
    head = f"{'requests':<30}" + "".join(f"{s:>14}" for s in sizes)
    print(head)
    print("-" * len(head))
    for label, figures, unit in rows(results):
        print(f"{label + ' (' + unit + ')':<30}" + "".join(f"{f:>14,.1f}" for f in figures))
    if len(results) > 1:
        print(f"\ntargets (issue 15), {sizes[-1]} against {sizes[0]} requests:")
        for line in verdicts(results):
            print(f"  {line}")


# -- main -----------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    try:
        values = sorted({int(float(part)) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or values[0] < 1000:
        raise argparse.ArgumentTypeError("give sizes of at least 1000 requests, e.g. 1e5,1e6")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("1e5,1e6,1e7"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "flamewatch-bench-scale",
        help="where built stores are cached (reused when present)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing, at most")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per timing, about")
    parser.add_argument("--build-only", action="store_true", help="build the stores, no more")
    parser.add_argument("--json", type=Path, default=Path("bench-out") / f"{NAME}.json")
    parser.add_argument("--child-dashboard", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_dashboard:
        database, endpoint = args.child_dashboard
        return child_dashboard(Path(database), endpoint, args.repeat, args.budget)
    _say(f"stores of code {fingerprint()} in {args.dir}")
    load_start = os.getloadavg()  # the machine may be shared: say how busy it was
    results = [measure(requests, args) for requests in args.sizes]
    if args.build_only:
        for r in results:
            print(f"{r['requests']:>12,} requests: {r['store']} ({r['build']['build_s']} s)")
        return 0
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": NAME,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpu_count": os.cpu_count(),
        "repeat": args.repeat,
        "budget_s": args.budget,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "results": results,
        "targets": verdicts(results) if len(results) > 1 else [],
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
