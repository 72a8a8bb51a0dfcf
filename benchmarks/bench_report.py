"""How long the report site takes to build from a big store, and how much memory.

The store is made by :mod:`synthetic_store` (default: 1,000,000 requests, 50 endpoints,
20 versions, 200 users, 500 outliers with profiles; cached under ``bench-out/``). The site is
built by the real command, ``flamewatch report --quiet``, in a child process, three times; the
figures are the median wall time and the child's peak RSS (``getrusage``), and the largest file
of the site other than plotly.js. Then, in this process, the time of each part: the aggregation
(:class:`~flamewatch.reports.aggregate.ReportData`) and the outlier profile exports.

Targets: <= 15 s and <= 500 MB for the 1M-request store; every page except plotly.js <= 1 MB.

Run from the repository root::

    python benchmarks/bench_report.py            # 1M requests
    python benchmarks/bench_report.py --quick    # 100,000 requests, 100 outliers
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
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_store import generate, time_report

from flamewatch.reports.export import to_html, to_pyisession, to_speedscope
from flamewatch.reports.outliers import list_outliers, load_session

NAME = "bench_report"


def store(requests: int, outliers: int) -> Path:
    path = Path("bench-out") / f"synthetic-{requests}-{outliers}.sqlite3"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        start = time.perf_counter()
        generate(path, requests=requests, outliers=outliers)
        print(f"generated {path} in {time.perf_counter() - start:.1f} s")
    return path


def build_once(database: Path, output: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, polled every 10 ms) of ``flamewatch report``."""
    shutil.rmtree(output, ignore_errors=True)
    command = [str(Path(sys.executable).with_name("flamewatch")), "report", "-d", str(database)]
    command += ["-o", str(output), "--quiet"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    process = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    if child.wait() != 0:
        raise SystemExit(f"flamewatch report failed ({child.returncode})")
    return seconds, peak / 2**20


def largest_files(site: Path) -> dict[str, Any]:
    files = [p for p in site.rglob("*") if p.is_file() and p.name != "plotly.min.js"]
    biggest = max(files, key=lambda p: p.stat().st_size)
    pages = [p for p in files if p.suffix == ".html"]
    return {
        "files": len(files),
        "html_pages": len(pages),
        "largest_file": str(biggest.relative_to(site)),
        "largest_bytes": biggest.stat().st_size,
        "largest_report_page_bytes": max(
            p.stat().st_size for p in pages if p.name != "profile.html"
        ),
        "site_bytes": sum(p.stat().st_size for p in site.rglob("*") if p.is_file()),
    }


def parts(database: Path) -> dict[str, float]:
    timings: dict[str, float] = {
        f"aggregate.{name}": seconds for name, seconds in time_report(database).items()
    }
    rows = list_outliers(str(database))
    start = time.perf_counter()
    for row in rows:
        session = load_session(str(database), row.id)
        to_pyisession(session)
        to_speedscope(session)
        to_html(session)
    timings["outlier_exports"] = time.perf_counter() - start
    timings["outliers"] = len(rows)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    requests, outliers = (100_000, 100) if args.quick else (1_000_000, 500)
    database = store(requests, outliers)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for _ in range(3):
            runs.append(build_once(database, site))
        sizes = largest_files(site)
    seconds = statistics.median(s for s, _ in runs)
    peak = max(m for _, m in runs)
    timings = parts(database)
    print(f"store: {database} ({requests:,} requests, {outliers} outliers)")
    print(f"build (flamewatch report, median of 3): {seconds:.1f} s, peak RSS {peak:.0f} MB")
    print(
        f"site: {sizes['files']} files, {sizes['html_pages']} HTML pages,"
        f" {sizes['site_bytes'] / 2**20:.1f} MB; largest file but plotly.js:"
        f" {sizes['largest_file']} ({sizes['largest_bytes'] / 1024:.0f} KB); largest report"
        f" page {sizes['largest_report_page_bytes'] / 1024:.0f} KB"
    )
    for name, value in timings.items():
        print(f"  {name:32} {value:8.2f}")
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(
        json.dumps(
            {
                "requests": requests,
                "outliers": outliers,
                "runs": runs,
                "seconds_median": seconds,
                "peak_rss_mb": peak,
                "sizes": sizes,
                "parts": timings,
                "cpu_count": os.cpu_count(),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
