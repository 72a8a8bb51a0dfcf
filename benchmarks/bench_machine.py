"""How fast this machine runs the yardsticks the request-path targets were set with.

The issue's targets in µs (flamewatch adds at most 5 µs per request) were set on figures
measured on this 2-core VM in its first sessions (2026-11), when a bare Flask test-client
request took 115-155 µs. The VM is shared: on some days the same request takes two or three
times as long, while a single clock read costs what it did. This script times the same
yardsticks again, in this process, and prints each one's ratio to its figure then, so
that a µs figure measured today can be set against the target it is meant for:

* ``time.perf_counter_ns()`` and ``time.time()`` -- one C call, in the CPU's caches;
* a bare Flask test-client request to a trivial view -- the request the target is relative to;
* walking a 36-deep stack collecting ``(code, line)``, and ``traceback.extract_stack`` from
  36 frames deep -- Python-heavy work that touches many objects, as a request does.

Each figure is the median of ``--repeats`` rounds; within a round, a call's cost is the fastest
of five ``timeit`` repeats (the figures then are medians, so the ratios here lean a little low)
and the request's the median of 3,000. Run from the repository root::

    python benchmarks/bench_machine.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
import traceback
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType

from flask import Flask

OUT_DIR = Path(__file__).resolve().parent.parent / "bench-out"
DEPTH = 36

#: the yardstick -> its figure in µs when the targets were set, 2026-11 (low, high)
WHEN_TARGETS_SET = {
    "perf_counter_ns": (0.060, 0.090),
    "time.time": (0.050, 0.060),
    "bare test-client request": (115.0, 155.0),
    f"walk a {DEPTH}-deep stack": (4.8, 4.8),
    "traceback.extract_stack": (50.0, 60.0),
}


def at_depth(depth: int, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` wrapped so that it runs ``depth`` frames below the caller."""

    def down(n: int) -> object:
        return down(n - 1) if n else fn()

    return lambda: down(depth - 2)


def walk_stack() -> list[tuple[CodeType, int | None]]:
    frame: FrameType | None = sys._getframe()
    out = []
    while frame is not None:
        out.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return out


def per_call_us(fn: Callable[[], object], baseline: Callable[[], object] | None = None) -> float:
    """µs per call of ``fn``, less ``baseline``'s (the frames that carry it to its depth)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    cost = min(timer.repeat(5, number)) / number
    if baseline is not None:
        base = timeit.Timer(baseline)
        cost -= min(base.repeat(5, number)) / number
    return cost * 1e6


def bare_request_us(requests: int = 3000) -> float:
    app = Flask("bench_machine_app")

    @app.route("/")
    def index() -> str:
        return "ok"

    client = app.test_client()
    for _ in range(300):
        client.get("/").get_data()
    times = []
    clock = time.perf_counter_ns
    for _ in range(requests):
        t0 = clock()
        client.get("/").get_data()
        times.append(clock() - t0)
    return statistics.median(times) / 1000


def measure() -> dict[str, float]:
    nothing = at_depth(DEPTH, lambda: None)
    return {
        "perf_counter_ns": per_call_us(time.perf_counter_ns),
        "time.time": per_call_us(time.time),
        "bare test-client request": bare_request_us(),
        f"walk a {DEPTH}-deep stack": per_call_us(at_depth(DEPTH, walk_stack), nothing),
        "traceback.extract_stack": per_call_us(at_depth(DEPTH, traceback.extract_stack), nothing),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()
    rounds = [measure() for _ in range(args.repeats)]
    print(f"median of {args.repeats} rounds; then = the figure the targets were set with")
    print(f"{'yardstick':28} {'today µs':>10} {'then µs':>14} {'today ÷ then':>14}")
    result = {}
    for name, (low, high) in WHEN_TARGETS_SET.items():
        today = statistics.median(r[name] for r in rounds)
        slow, fast = today / high, today / low
        then = f"{low:g}" if low == high else f"{low:g}-{high:g}"
        ratio = f"{slow:.1f}" if low == high else f"{slow:.1f}-{fast:.1f}"
        print(f"{name:28} {today:10.3f} {then:>14} {ratio:>14}")
        result[name] = {"today_us": today, "then_us": [low, high], "ratio": [slow, fast]}
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / "bench_machine.json"
    out.write_text(json.dumps({"rounds": args.repeats, "yardsticks": result}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
