"""What a scrape of ``/flamewatch/metrics`` costs, against the size of what it reads.

A scrape reads ``latency_total`` (rows per endpoint x method x status x occupied bucket), never
the requests. This fills that table directly -- each endpoint with GET and POST, statuses 200
and 500, 50 occupied buckets: 200 rows -- for 5, 50 and 500 endpoints (1,000 to 100,000 rows;
a real app of 50 endpoints has a few thousand), each once with counts that add up to 10^5
requests and once to 10^9, and times reading and rendering the exposition (the work a scrape
does past its one-second cache), median of ``--repeat`` runs, on SQLite and on a throwaway
PostgreSQL server (``tests/pgserver.py``; ``--sqlite-only`` skips it).

Run from the repository root::

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --quick      # 5 and 50 endpoints, fewer runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from pgserver import PostgresServer  # noqa: E402

from flamewatch.reports.metrics import read_store_metrics, render  # noqa: E402
from flamewatch.sampler.store import make_store, resolve_database  # noqa: E402
from flamewatch.sampler.store.connection import open_connection  # noqa: E402

NAME = "bench_metrics"
ROWS_PER_ENDPOINT = 200  # 2 methods x 2 statuses x 50 buckets
FIRST_BUCKET = 150  # ~20 ms; 50 consecutive buckets reach ~55 ms


def fill(database: str, endpoints: int, requests: int) -> None:
    """A fresh store whose ``latency_total`` counts ``requests`` over ``endpoints``."""
    url = resolve_database(database, ".")
    store = make_store(url)
    store.open()
    store.close()
    rows = endpoints * ROWS_PER_ENDPOINT
    per_row = requests // rows
    conn = open_connection(url, readonly=False)
    try:
        with conn.transaction():
            conn.insert_many(
                "endpoints",
                ("id", "name", "first_seen", "last_seen"),
                [(e + 1, f"endpoint_{e}", 0.0, 0.0) for e in range(endpoints)],
            )
            conn.insert_many(
                "rules",
                ("endpoint_id", "rule", "methods", "first_seen", "last_seen"),
                [
                    (e + 1, f"/api/v1/endpoint_{e}/<int:id>", "GET,POST", 0.0, 0.0)
                    for e in range(endpoints)
                ],
            )
            conn.insert_many(
                "latency_total",
                ("endpoint_id", "method", "status", "bucket", "count", "sum_ms"),
                [
                    (e + 1, method, status, FIRST_BUCKET + b, per_row, per_row * 30.0)
                    for e in range(endpoints)
                    for method in ("GET", "POST")
                    for status in (200, 500)
                    for b in range(50)
                ],
            )
    finally:
        conn.close()


def scrape_ms(database: str, repeat: int) -> tuple[float, int]:
    """Median ms of one reading and rendering, and the exposition's size in bytes."""
    times, size = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        text = render(read_store_metrics(resolve_database(database, ".")))
        times.append((time.perf_counter() - began) * 1000)
        size = len(text.encode())
    return statistics.median(times), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args(argv)
    sizes = (5, 50) if args.quick else (5, 50, 500)
    repeat = args.repeat or (5 if args.quick else 21)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None if args.sqlite_only else PostgresServer()
        try:
            if server is not None:
                server.__enter__()
            for backend in ("sqlite",) + (() if server is None else ("postgresql",)):
                for endpoints in sizes:
                    for requests in (10**5, 10**9):
                        if backend == "sqlite":
                            database = str(Path(tmp) / f"m-{endpoints}-{requests}.sqlite3")
                        else:
                            assert server is not None
                            database = server.database()
                        fill(database, endpoints, requests)
                        ms, size = scrape_ms(database, repeat)
                        row = {
                            "backend": backend,
                            "endpoints": endpoints,
                            "rows": endpoints * ROWS_PER_ENDPOINT,
                            "requests": requests,
                            "scrape_ms": round(ms, 2),
                            "exposition_kb": round(size / 1024, 1),
                        }
                        results.append(row)
                        print(
                            f"{backend:10} {row['rows']:7,} rows {requests:>13,} requests:"
                            f" {ms:8.2f} ms, {row['exposition_kb']:8.1f} KB"
                        )
        finally:
            if server is not None:
                server.__exit__(None, None, None)
    out = HERE.parent / "bench-out"
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
