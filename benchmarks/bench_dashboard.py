"""What the live dashboard costs the app it runs in, with and without its cache.

The store is made by :mod:`synthetic_store` (default 1,000,000 requests; ``--quick``: 100,000),
cached under ``bench-out/``. An app serves a trivial view and the dashboard (no authentication,
``app.testing``). Measured through the test client, in this process:

* the time of one dashboard page (``/flamewatch/``, an endpoint page, ``/monitoring``) when it
  reads the store (``dashboard_cache_s = 0``) and when its reading is cached;
* the app's own throughput and latency (``GET /`` in a loop for 20 s; ``--quick``: 6 s)
  while another thread loads the dashboard's index page five times a second (a busy team):
  with no dashboard traffic, with the default cache (5 s, and at least ten times as long as a
  reading took; warmed before) and with the cache off (``dashboard_cache_s = 0``); three
  interleaved rounds, medians. Dashboard and app share the process (and its GIL), as they do
  in a worker.

Run from the repository root::

    python benchmarks/bench_dashboard.py            # 1M requests
    python benchmarks/bench_dashboard.py --quick    # 100,000 requests
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).parent))

from bench_report import store

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.site import endpoint_page

NAME = "bench_dashboard"
BROWSE_RATE = 5  # dashboard pages a second


def make_app(database: Path, cache_s: float) -> Flask:
    app = Flask("bench", instance_path=tempfile.mkdtemp())
    app.config.update(TESTING=True)

    @app.get("/")
    def index() -> str:
        return "hello"

    Flamewatch(app, database=str(database), version="bench", dashboard_cache_s=cache_s)
    return app


def page_times(client: FlaskClient, path: str, repeat: int) -> list[float]:
    """The milliseconds of each of ``repeat`` readings of the page at ``path``, all 200s."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def page_ms(app: Flask, path: str, repeat: int) -> float:
    client = app.test_client()
    client.get(path)  # a first reading for the cached variant
    return statistics.median(page_times(client, path, repeat))


def app_latency(app: Flask, dashboard_load: bool, seconds: float) -> dict[str, float]:
    """The app's latency for ``seconds`` while (or without) a thread browses the dashboard."""
    stop = threading.Event()
    pages = [0]

    def browse() -> None:  # a busy team: five page views a second, as fast as they come
        client = app.test_client()
        while not stop.wait(1 / BROWSE_RATE):
            client.get("/flamewatch/")
            pages[0] += 1

    thread = threading.Thread(target=browse)
    if dashboard_load:
        thread.start()
    client = app.test_client()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        client.get("/")
        times.append((time.perf_counter() - start) * 1e6)
    stop.set()
    if dashboard_load:
        thread.join()
    times.sort()
    return {
        "app_requests": len(times),
        "median_us": statistics.median(times),
        "p90_us": times[int(len(times) * 0.9)],
        "p99_us": times[int(len(times) * 0.99)],
        "dashboard_pages": pages[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    requests, outliers = (100_000, 100) if args.quick else (1_000_000, 500)
    source = store(requests, outliers)
    work = Path(tempfile.mkdtemp()) / "store.sqlite3"
    shutil.copyfile(source, work)  # the apps record routes into it

    results: dict[str, Any] = {"requests": requests}
    uncached, cached = make_app(work, 0), make_app(work, 5)
    paths = ["/flamewatch/", f"/flamewatch/{endpoint_page('orders.list')}"]
    paths.append("/flamewatch/monitoring")
    print(f"store: {requests:,} requests")
    print(f"{'page':<46} {'read each time':>15} {'cached':>10}")
    for path in paths:
        cold = page_ms(uncached, path, 3)
        warm = page_ms(cached, path, 20)
        results[path] = {"uncached_ms": cold, "cached_ms": warm}
        print(f"{path:<46} {cold:>12.1f} ms {warm:>7.1f} ms")

    seconds = 6.0 if args.quick else 20.0
    print(f"\napp, GET / for {seconds:.0f} s, /flamewatch/ loaded {BROWSE_RATE}/s (medians)")
    variants = [("no dashboard traffic", cached, False)]
    variants += [("dashboard, cache 5 s", cached, True), ("dashboard, cache off", uncached, True)]
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in variants}
    for _ in range(3):
        for label, app, load in variants:
            app.test_client().get("/flamewatch/")  # the cached variant starts from a reading
            rounds[label].append(app_latency(app, load, seconds))
    for label, figures in rounds.items():
        summary = {key: statistics.median(f[key] for f in figures) for key in figures[0]}
        results[label] = summary
        print(
            f"{label:<22} {summary['app_requests']:>7.0f} requests, median"
            f" {summary['median_us']:>6.0f} µs, p90 {summary['p90_us']:>6.0f} µs,"
            f" p99 {summary['p99_us']:>7.0f} µs; {summary['dashboard_pages']:.0f} dashboard pages"
        )
    for app in (uncached, cached):
        app.extensions["flamewatch"].close()
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
