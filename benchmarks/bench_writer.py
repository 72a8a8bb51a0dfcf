"""flamewatch's background writer: how fast it stores records, and what a burst costs in memory.

(a) Ingest rate, into a real SQLite file in a temp dir, through the agent of a Flask app
(``Flamewatch(app, database=...)``, writer started with ``agent.start()``); records are pushed
straight into the agent's ``Recorder`` (the request thread's calls, without Flask around them):

* ``concurrent`` -- a producer thread pushes N records as fast as it can while the writer runs
  with the default flush interval (queue cap raised to N, so nothing is dropped); the rate is
  N / (first push .. ``fw.flush()`` returned).
* ``drain``      -- N records are queued while the writer sleeps (flush interval 60 s), then
  ``fw.flush()`` is timed: the writer's own rate, with nothing else running.
* ``paced``      -- default settings (queue cap 50,000, flush every 1 s); a producer pushes at a
  fixed rate (25,000/s) for a few seconds; reports dropped records and the largest queue seen.

For each: records/s (median of the runs), the writer thread's CPU time per record (psutil's
per-thread times), and a check that the rows in the store equal the records pushed - dropped.

(b) Memory under a burst larger than the queue cap, each scenario in a fresh child process (for
a clean RSS baseline): the store is ``unwritable`` (its directory cannot be created) or
``locked`` (another connection holds SQLite's write lock for a few seconds, as a stuck process
would). A producer thread pushes 3x the queue cap, either at once (``instant``) or spread over
several seconds (``spread``, so that the writer takes records from the queue while the store
fails).
Reported: peak RSS growth (psutil, sampled every 10 ms), the most records held at once (queued
+ taken by the writer and not yet written), dropped and -- for the lock, once it is released --
written records, and, with tracemalloc in this process, the bytes one queued record costs.

Run from the repository root::

    python benchmarks/bench_writer.py            # full run, about 2-4 minutes
    python benchmarks/bench_writer.py --quick    # smoke run, well under a minute

Results are printed as tables and written to ``bench-out/bench_writer.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from flask import Flask

from flamewatch.flask_plugin import Flamewatch
from flamewatch.sampler.inflight import STATUS, new_record

NAME = "bench_writer"
OUT_DIR = Path(__file__).resolve().parent.parent / "bench-out"
ENDPOINTS = tuple(f"ep{i}" for i in range(8))
DEFAULT_QUEUE = 50_000
PACED_RATE = 25_000

Push = Callable[[int], None]  # push record number i


@dataclass(frozen=True)
class Plan:
    runs: int
    records: int  # per ingest run
    paced_seconds: float
    queue_size: int  # for the burst scenarios
    spread_seconds: float
    bytes_records: int


FULL = Plan(
    runs=3,
    records=200_000,
    paced_seconds=4.0,
    queue_size=DEFAULT_QUEUE,
    spread_seconds=6.0,
    bytes_records=50_000,
)
QUICK = Plan(
    runs=1,
    records=30_000,
    paced_seconds=1.0,
    queue_size=5_000,
    spread_seconds=4.0,
    bytes_records=10_000,
)


# -- the agent and how to feed it -----------------------------------------------------------------


def make_agent(db: Path, **options: Any) -> tuple[Flamewatch, Any]:
    app = Flask("bench_writer_app")
    fw = Flamewatch(app, database=str(db), version="bench", **options)
    return fw, app.extensions["flamewatch"]


def make_push(recorder: Any) -> Push:
    """What a request thread does at the end of a monitored request, for record ``i``.

    Durations are 1.0-1.1 ms, far below the outlier floor, so nothing is captured.
    """

    rules = {name: f"/{name}/<int:id>" for name in ENDPOINTS}
    n_endpoints = len(ENDPOINTS)
    clock = time.perf_counter_ns
    thread_id = threading.get_ident()
    thresholds, end = recorder.thresholds_ns, recorder.end

    def push(i: int) -> None:
        endpoint = ENDPOINTS[i % n_endpoints]
        t0 = clock()
        record = new_record(endpoint, rules[endpoint], t0, thread_id, thresholds.get(endpoint))
        record[STATUS] = 200
        end(record, t0 + 1_000_000 + (i % 97) * 1_000)

    return push


def stored_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def thread_cpu_s(name: str) -> float:
    """CPU seconds (user + system) of the live thread called ``name``; 0.0 if none."""
    native = {t.native_id: t.name for t in threading.enumerate()}
    return sum(
        t.user_time + t.system_time for t in psutil.Process().threads() if native.get(t.id) == name
    )


# -- (a) ingest -----------------------------------------------------------------------------------


def producer(push: Push, n: int, rate: float | None = None) -> threading.Thread:
    """A started thread pushing ``n`` records, as fast as it can or at ``rate`` per second."""

    def run() -> None:
        if rate is None:
            for i in range(n):
                push(i)
            return
        chunk = max(1, int(rate / 100))  # 100 chunks a second
        start = time.perf_counter()
        for first in range(0, n, chunk):
            for i in range(first, min(n, first + chunk)):
                push(i)
            delay = start + (first + chunk) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    thread = threading.Thread(target=run, name="bench-producer")
    thread.start()
    return thread


def ingest_run(tmp: Path, mode: str, n: int, paced_seconds: float) -> dict[str, Any]:
    db = tmp / f"ingest-{mode}-{time.monotonic_ns()}.sqlite3"
    options: dict[str, Any] = {}
    if mode == "concurrent":
        options["queue_size"] = n
    elif mode == "drain":
        options.update(queue_size=n, flush_interval=60.0)
    else:
        n = int(PACED_RATE * paced_seconds)
    fw, agent = make_agent(db, **options)
    agent.start()
    fw.flush(timeout=30)  # the store is open and the process registered before timing
    push = make_push(agent.recorder)
    gc.collect()
    max_queue = 0
    if mode == "drain":
        producer(push, n).join()
        max_queue = len(agent.recorder.queue)
    cpu0, t0 = thread_cpu_s("flamewatch-writer"), time.perf_counter()
    if mode != "drain":
        thread = producer(push, n, PACED_RATE if mode == "paced" else None)
        while thread.is_alive():
            max_queue = max(max_queue, len(agent.recorder.queue))
            thread.join(0.01)
    t1 = time.perf_counter()
    flushed = fw.flush(timeout=300)
    t2 = time.perf_counter()
    cpu = thread_cpu_s("flamewatch-writer") - cpu0
    dropped = agent.recorder.dropped
    fw.close()
    rows = stored_rows(db)
    return {
        "mode": mode,
        "records": n,
        "seconds": t2 - t0,
        "push_seconds": t1 - t0,
        "flush_seconds": t2 - t1,
        "records_per_s": (n - dropped) / (t2 - t0),
        "writer_cpu_us_per_record": cpu / max(1, n - dropped) * 1e6,
        "dropped": dropped,
        "max_queue": max_queue,
        "stored": rows,
        "lost": n - dropped - rows,
        "flushed": flushed,
    }


def ingest(plan: Plan, tmp: Path) -> dict[str, dict[str, Any]]:
    modes = ("concurrent", "drain", "paced")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for r in range(plan.runs):
        for mode in modes[r % 3 :] + modes[: r % 3]:  # interleaved, order rotating
            runs[mode].append(ingest_run(tmp, mode, plan.records, plan.paced_seconds))
            print(f"  ingest {mode} run {len(runs[mode])}/{plan.runs} done", file=sys.stderr)
    return {mode: summarise_ingest(results) for mode, results in runs.items()}


def summarise_ingest(results: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    return {
        "records": results[0]["records"],
        "records_per_s": median("records_per_s"),
        "writer_cpu_us_per_record": median("writer_cpu_us_per_record"),
        "flush_seconds": median("flush_seconds"),
        "dropped": max(r["dropped"] for r in results),
        "max_queue": max(r["max_queue"] for r in results),
        "lost": max(r["lost"] for r in results),
        "runs": results,
    }


def print_ingest(summary: dict[str, dict[str, Any]], plan: Plan) -> None:
    head = (
        f"{'mode':11} {'records':>8} {'records/s':>10} {'writer CPU µs/rec':>18}"
        f" {'final flush s':>14} {'dropped':>8} {'max queue':>10} {'lost':>5}"
    )
    print(f"\n(a) Ingest into SQLite, median of {plan.runs} run(s) (target >= 20,000 records/s)")
    print(head)
    print("-" * len(head))
    for mode, s in summary.items():
        print(
            f"{mode:11} {s['records']:8d} {s['records_per_s']:10,.0f}"
            f" {s['writer_cpu_us_per_record']:18.1f} {s['flush_seconds']:14.3f}"
            f" {s['dropped']:8d} {s['max_queue']:10d} {s['lost']:5d}"
        )
    print(
        "concurrent: pushed as fast as possible while the writer runs; drain: queued first,"
        " then written;\npaced: pushed at"
        f" {PACED_RATE:,}/s with the default queue cap ({DEFAULT_QUEUE:,}) and flush interval"
        " (1 s), so its rate is the pace: look at dropped and the final flush."
    )


# -- (b) burst memory -----------------------------------------------------------------------------


def bytes_per_queued_record(n: int) -> dict[str, float]:
    """tracemalloc: memory held per record in the recorder's queue (no writer running)."""
    with tempfile.TemporaryDirectory() as tmp:
        fw, agent = make_agent(Path(tmp) / "unused.sqlite3", queue_size=n)
        push = make_push(agent.recorder)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            push(i)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        queued = len(agent.recorder.queue)
        agent.recorder.queue.clear()
        fw.close()
    return {"records": queued, "bytes_per_record": (after - before) / max(1, queued)}


class Watcher:
    """Samples, every 10 ms on a thread, this process's RSS and the records flamewatch holds
    (queued + taken by the writer but not yet written); keeps the peaks."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.process = psutil.Process()
        self.peak_rss = self.process.memory_info().rss
        self.peak_held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watcher", daemon=True)

    def held(self) -> int:
        writer = getattr(self.agent, "_writer", None)  # private: reported only if present
        return len(self.agent.recorder.queue) + len(getattr(writer, "_pending", ()))

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            self.peak_held = max(self.peak_held, self.held())

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def hold_write_lock(db: Path, seconds: float, held: threading.Event) -> threading.Thread:
    """Another connection takes SQLite's write lock on ``db`` for ``seconds``."""

    def run() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=run, name="bench-lock-holder")
    thread.start()
    return thread


def store_path(tmp: Path, store: str) -> Path:
    if store == "unwritable":
        (tmp / "a-file").write_text("not a directory")
        return tmp / "a-file" / "store" / "flamewatch.sqlite3"  # its directory cannot be made
    return tmp / "flamewatch.sqlite3"


def burst_child(store: str, pace: str, queue_size: int, seconds: float) -> dict[str, Any]:
    """In a child process: push 3 x ``queue_size`` records at once (``instant``) or spread
    over ``seconds`` (``spread``), while the store is ``unwritable`` or ``locked``."""
    burst = 3 * queue_size
    rate = burst / seconds if pace == "spread" else None
    with tempfile.TemporaryDirectory() as tmp_name:
        db = store_path(Path(tmp_name), store)
        fw, agent = make_agent(db, queue_size=queue_size)
        agent.start()
        push = make_push(agent.recorder)
        for i in range(100):  # warm the code paths before the baseline
            push(i)
        fw.flush(timeout=5)
        dropped0, rows0 = agent.recorder.dropped, agent.written
        locker = None
        if store == "locked":
            held = threading.Event()
            locker = hold_write_lock(db, seconds + 2.0, held)
            held.wait()
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        with Watcher(agent) as watch:
            t0 = time.perf_counter()
            producer(push, burst, rate).join()
            push_s = time.perf_counter() - t0
            if locker is not None:
                locker.join()
            else:
                time.sleep(2.0)  # the writer retries, fails again and sheds its excess
            flushed = fw.flush(timeout=120)
        dropped = agent.recorder.dropped - dropped0
        written = agent.written - rows0
        fw.close()
    return {
        "store": store,
        "pace": pace,
        "queue_size": queue_size,
        "burst": burst,
        "push_seconds": push_s,
        "peak_held": watch.peak_held,
        "dropped": dropped,
        "written_after": written if store == "locked" else 0,
        "flushed": flushed,
        "rss_growth_mb": (watch.peak_rss - rss0) / 2**20,
        "rss_bytes_per_held_record": (watch.peak_rss - rss0) / max(1, watch.peak_held),
    }


def burst(plan: Plan) -> list[dict[str, Any]]:
    results = []
    for store in ("unwritable", "locked"):
        for pace in ("instant", "spread"):
            cmd = [sys.executable, __file__, "--child", store, pace]
            cmd += [str(plan.queue_size), str(plan.spread_seconds)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  burst {store} {pace} done", file=sys.stderr)
    return results


def print_burst(results: list[dict[str, Any]], per_record: dict[str, float]) -> None:
    head = (
        f"{'store':11} {'burst':8} {'cap':>7} {'pushed':>7} {'peak held':>10} {'dropped':>8}"
        f" {'written':>8} {'peak RSS +MB':>13} {'B/held rec':>11}"
    )
    print("\n(b) A burst of 3x the queue cap while the store cannot be written")
    print(head)
    print("-" * len(head))
    for r in results:
        written = str(r["written_after"]) if r["store"] == "locked" else "-"
        print(
            f"{r['store']:11} {r['pace']:8} {r['queue_size']:7d} {r['burst']:7d}"
            f" {r['peak_held']:10d} {r['dropped']:8d} {written:>8}"
            f" {r['rss_growth_mb']:13.1f} {r['rss_bytes_per_held_record']:11.0f}"
        )
    print(
        "instant: pushed as fast as possible; spread: over several seconds, so the writer takes"
        " records while\nthe store fails. held: queued + taken by the writer, not yet written;"
        " written: after the lock was released."
    )
    print(
        f"one queued record (tracemalloc, {per_record['records']:,.0f} records):"
        f" {per_record['bytes_per_record']:.0f} bytes"
    )


# -- main -----------------------------------------------------------------------------------------


def write_json(payload: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{NAME}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, well under a minute")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.child:
        store, pace, queue_size, seconds = args.child
        print(json.dumps(burst_child(store, pace, int(queue_size), float(seconds))))
        return 0
    plan = QUICK if args.quick else FULL
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}")
    with tempfile.TemporaryDirectory(prefix="flamewatch-bench-") as tmp:
        rates = ingest(plan, Path(tmp))
    print_ingest(rates, plan)
    per_record = bytes_per_queued_record(plan.bytes_records)
    bursts = burst(plan)
    print_burst(bursts, per_record)
    path = write_json(
        {
            "benchmark": NAME,
            "quick": args.quick,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "plan": plan.__dict__,
            "ingest": rates,
            "bytes_per_queued_record": per_record,
            "burst": bursts,
        }
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
