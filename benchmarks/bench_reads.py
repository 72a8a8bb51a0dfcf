"""The report and the live dashboard read from histograms, against the same code reading every
request, side by side on one store.

The store is :mod:`bench_report`'s synthetic one (default 1,000,000 requests, 500 outliers;
``--quick``: 100,000 and 100), whose histograms the generator fills with ``flamewatch migrate``'s
backfill. Two copies of flamewatch read it: this working tree ("after") and the tree of a git
revision (``--before``, default ``a229e75``: main before the histograms, whose reports read
every request; it reads a schema-4 store as it is), exported with ``git archive`` and imported
ahead of the installed package through ``PYTHONPATH``. Each measurement runs in a child process
of one copy, the copies taking turns, three rounds; the figures are medians:

* ``report``: :func:`~flamewatch.reports.site.write_site` building the whole static site
  (what ``flamewatch report`` does, without the interpreter's start);
* ``dashboard``: one uncached page of the live dashboard (``dashboard_cache_s = 0``, so every
  page reads the store) through the test client: the index and one endpoint's page.

Run from the repository root::

    python benchmarks/bench_reads.py            # 1M requests
    python benchmarks/bench_reads.py --quick    # 100,000 requests
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

sys.path.insert(0, str(Path(__file__).parent))

NAME = "bench_reads"
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sampler", "reports", "flask_plugin")


def export(revision: str, into: Path) -> Path:
    """The tree of ``revision`` as an importable ``flamewatch`` namespace under ``into``."""
    source, package = into / "src", into / "pkg" / "flamewatch"
    source.mkdir(parents=True)
    package.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, *PACKAGES],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    for name in PACKAGES:
        (package / name).symlink_to(source / name)
    return into / "pkg"


def child(database: str, what: str, repeat: int) -> dict[str, Any]:
    """Measure in this process, with whichever flamewatch it imports."""
    import flamewatch.reports.site as site_module  # noqa: PLC0415 -- the flamewatch measured

    found: dict[str, Any] = {"code": str(Path(site_module.__file__).parent)}
    if what == "report":
        times = []
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                site_module.write_site(database, Path(tmp) / "site", quiet=True)
                times.append(time.perf_counter() - start)
        found["seconds"] = times
        return found
    from bench_dashboard import make_app, page_times  # noqa: PLC0415 -- child only

    app = make_app(Path(database), 0)
    try:
        client = app.test_client()
        endpoint = f"/flamewatch/{site_module.endpoint_page('orders.list')}"
        for path in ("/flamewatch/", endpoint):
            found[path] = page_times(client, path, repeat)
    finally:
        app.extensions["flamewatch"].close()
    return found


def run_child(pythonpath: str, database: Path, what: str, repeat: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    command = [sys.executable, __file__, "--child", what, "--database", str(database)]
    command += ["--repeat", str(repeat)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def copy_of(source: Path, work: Path) -> Path:
    """A copy of the synthetic store, which the dashboard's app registers its process in."""
    shutil.copyfile(source, work)
    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", default="a229e75", help="git revision read as 'before'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["report", "dashboard"], help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.database, args.child, args.repeat)))
        return 0

    from bench_report import store  # noqa: PLC0415 -- parent only

    requests, outliers = (100_000, 100) if args.quick else (1_000_000, 500)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    try:
        database = copy_of(store(requests, outliers), tmp / "store.sqlite3")
        copies = {"before": str(export(args.before, tmp / "before")), "after": ""}
        figures: dict[str, dict[str, list[float]]] = {label: {} for label in copies}
        for _ in range(args.rounds):
            for label, pythonpath in copies.items():
                report = run_child(pythonpath, database, "report", 1)
                figures[label].setdefault("report build, s", []).extend(report["seconds"])
                pages = run_child(pythonpath, database, "dashboard", 1)
                for path in ("/flamewatch/", next(p for p in pages if "endpoints/" in p)):
                    key = "dashboard index, ms" if path == "/flamewatch/" else "endpoint page, ms"
                    figures[label].setdefault(key, []).extend(pages[path])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {
        label: {key: statistics.median(values) for key, values in found.items()}
        for label, found in figures.items()
    }
    print(f"store: {requests:,} requests, {outliers} outliers; medians of {args.rounds} rounds")
    print(f"{'':<24} {'before (' + args.before + ')':>22} {'after':>12}")
    for key in medians["after"]:
        before, after = medians["before"][key], medians["after"][key]
        print(f"{key:<24} {before:>22.2f} {after:>12.2f}   ({before / after:.0f}x)")
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(
        json.dumps({"requests": requests, "figures": figures, "medians": medians}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
