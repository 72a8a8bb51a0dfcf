"""The PostgreSQL store next to SQLite: ingest from 4 worker processes, and report build time.

A throwaway PostgreSQL server is started in a temporary directory (``tests/pgserver.py``:
initdb, a free loopback port, fsync on -- the server's defaults), on the same machine.

(a) **Ingest from 4 worker processes.** Four child processes start together; each runs a real
agent (``Flamewatch(app, database=...)``, default flush interval, queue cap raised so nothing
is dropped) and pushes N records straight into its recorder (what a request thread does, see
``bench_writer.make_push``), then ``fw.flush()``. The rate is 4N / (first push .. last flush
returned). SQLite (one file) and PostgreSQL (one database) alternate, each store fresh, for
``rounds`` rounds; medians. Every run checks the store holds exactly 4N rows.

(b) **Report build.** The synthetic store of ``bench_report.py`` (1,000,000 requests, 500
outliers with profiles; cached in ``bench-out/``) is copied into PostgreSQL with
``flamewatch copy`` (timed), then ``flamewatch report`` is run on each store, alternating,
three times each in a child process: median wall time and peak RSS.

(c) **One writer.** ``Store.write_requests`` of 5,000-record batches (what a writer does with
a full batch), 10 batches after a warm-up, in this process: SQLite, PostgreSQL, and PostgreSQL
with the foreign keys of ``requests`` dropped (to show what the server's per-row checks cost);
alternating, ``rounds`` rounds, medians. ``--single-only`` runs only this part.

Run from the repository root::

    python benchmarks/bench_postgres.py            # full run, several minutes
    python benchmarks/bench_postgres.py --quick    # 100,000 requests, smaller ingest
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.store import ProcessInfo, RequestRecord, SQLiteStore, make_store

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_report import build_once, store  # noqa: E402
from pgserver import PostgresServer  # noqa: E402

NAME = "bench_postgres"
WORKERS = 4

_WORKER = """
import sys, time
sys.path.insert(0, sys.argv[4])
from bench_writer import make_agent, make_push
database, records, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fw, agent = make_agent(database, queue_size=max(records, 100), sampler=False)
agent.start()
push = make_push(agent.recorder)
time.sleep(max(0.0, start_at - time.time()))
began = time.time()
for i in range(records):
    push(i)
assert fw.flush(timeout=600), "flush failed"
print(began, time.time())
fw.close()
"""


def ingest_once(database: str, records: int) -> float:
    """Records/s written by 4 worker processes into one store."""
    start_at = time.time() + 3.0  # every child has imported flask and started its writer
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, database, str(records), str(start_at), str(HERE)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    spans = []
    for child in children:
        out, _ = child.communicate(timeout=900)
        if child.returncode != 0:
            raise SystemExit(f"an ingest worker failed ({child.returncode})")
        began, ended = map(float, out.split())
        spans.append((began, ended))
    stored = count_rows(database)
    if stored != WORKERS * records:
        raise SystemExit(f"{database}: {stored} rows stored, {WORKERS * records} pushed")
    return WORKERS * records / (max(e for _, e in spans) - min(b for b, _ in spans))


def count_rows(database: str) -> int:
    with open_readonly(database) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def single_writer(server: PostgresServer, tmp: str, rounds: int) -> dict[str, Any]:
    """Records/s of one store's ``write_requests`` in 5,000-record batches."""
    batch = [
        RequestRecord(f"ep{i % 8}", f"/ep{i % 8}/<int:id>", "GET", 200, 1e9 + i, 1.0,
                      "127.0.0.1", "127.0.0.1", False, None)
        for i in range(5000)
    ]  # fmt: skip
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": [], "postgresql, no FKs": []}
    for round_ in range(rounds):
        for kind, found in rates.items():
            if kind == "sqlite":
                store: Any = SQLiteStore(Path(tmp) / f"single-{round_}.sqlite3")
            else:
                store = make_store(server.database())
            store.open()
            try:
                if kind == "postgresql, no FKs":
                    for (name,) in store.conn.execute(
                        "SELECT conname FROM pg_constraint"
                        " WHERE conrelid = 'requests'::regclass AND contype = 'f'"
                    ).fetchall():
                        store.conn.execute(f"ALTER TABLE requests DROP CONSTRAINT {name}")
                process = store.register_process(ProcessInfo("h", 1, "v", "config", 1e9, "b"))
                store.write_requests(process, batch)  # names resolved and cached
                began = time.perf_counter()
                for _ in range(10):
                    store.write_requests(process, batch)
                found.append(10 * len(batch) / (time.perf_counter() - began))
            finally:
                store.close()
            print(f"one writer, round {round_ + 1}, {kind:18}: {found[-1]:10,.0f} records/s")
    return {
        kind: {"runs": found, "median": statistics.median(found)} for kind, found in rates.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-only", action="store_true", help="only part (c)")
    args = parser.parse_args(argv)
    records = 20_000 if args.quick else 100_000
    requests, outliers = (100_000, 100) if args.quick else (1_000_000, 500)
    results: dict[str, Any] = {"workers": WORKERS, "records_per_worker": records}
    with PostgresServer(durable=True) as server, tempfile.TemporaryDirectory() as tmp:
        results["single_writer"] = single_writer(server, tmp, args.rounds)
        if args.single_only:
            print(json.dumps(results["single_writer"], indent=2))
            return 0
        rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
        for round_ in range(args.rounds):
            for kind in ("sqlite", "postgresql"):
                database = (
                    str(Path(tmp) / f"ingest-{round_}.sqlite3")
                    if kind == "sqlite"
                    else server.database()
                )
                rates[kind].append(ingest_once(database, records))
                print(f"ingest round {round_ + 1} {kind:10}: {rates[kind][-1]:10,.0f} records/s")
        results["ingest"] = {
            kind: {"runs": found, "median": statistics.median(found)}
            for kind, found in rates.items()
        }

        synthetic = store(requests, outliers)
        target = server.database()
        flamewatch = str(Path(sys.executable).with_name("flamewatch"))
        began = time.perf_counter()
        subprocess.run(
            [flamewatch, "copy", "--from", str(synthetic), "--to", target],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        results["copy_seconds"] = time.perf_counter() - began
        print(
            f"flamewatch copy of {requests:,} requests into PostgreSQL:"
            f" {results['copy_seconds']:.1f} s"
        )
        builds: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
        for _ in range(3):
            for kind, database in (("sqlite", str(synthetic)), ("postgresql", target)):
                builds[kind].append(build_once(database, Path(tmp) / f"site-{kind}"))
                seconds, peak = builds[kind][-1]
                print(f"report from {kind:10}: {seconds:6.1f} s, peak RSS {peak:5.0f} MB")
        results["report"] = {
            kind: {
                "runs": found,
                "seconds_median": statistics.median(s for s, _ in found),
                "peak_rss_mb": max(m for _, m in found),
            }
            for kind, found in builds.items()
        }
    results["cpu_count"] = os.cpu_count()
    print()
    for kind in ("sqlite", "postgresql"):
        ingest, report = results["ingest"][kind], results["report"][kind]
        print(
            f"{kind:10}  ingest from {WORKERS} processes {ingest['median']:10,.0f} records/s"
            f"   report {report['seconds_median']:5.1f} s (peak RSS {report['peak_rss_mb']:.0f} MB)"
        )
    out = HERE.parent / "bench-out"
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
