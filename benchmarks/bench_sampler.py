"""What the stack sampler costs, how faithful its profiles are, and what a capture costs.

(a) Throughput cost, through the Flask test client, interleaved in rounds, medians reported:

* ``bare``        -- the app without flamewatch;
* ``timing``      -- flamewatch with ``sampler=False`` (timing, storing, outlier flags);
* ``sampler``     -- flamewatch sampling every 10 ms (1 ms past a threshold), without the
  aggregated profiles (``aggregate_profiles=False``);
* ``aggregate``   -- flamewatch at its defaults: the same, folding every request's samples into
  the aggregated profiles (on the sampler thread) and writing them every 10 s (on the writer's);
* ``pyinstrument``-- pyinstrument's ``Profiler`` started and stopped around every request (the
  common per-request recipe; its session is discarded).

on a CPU-bound view (a pure-Python loop of about 20 ms) and a view waiting on I/O (a 20 ms
sleep). The figures that matter are ``sampler`` against ``timing``, the cost of sampling alone,
and ``aggregate`` against ``sampler``, the cost of the aggregated profiles. Besides wall time,
the CPU time of the sampler and writer threads (read per thread from ``/proc`` with psutil) is
reported per request.

(b) Fidelity: an endpoint whose normal request takes ~2 ms gets outliers that spend ~60 ms
(>= 20x its mean) in one function, CPU-bound or sleeping. For each outlier's stored profile:
the share of the profile's time in that function, and the share of the request's measured
duration covered by samples (the profile's total minus its ``[unsampled]`` time). An outlier
stored without a profile (the sampler never reached it) is counted, not measured.

Each fidelity line gives the samples per outlier too (median and minimum): a CPU-bound
thread is sampled only when the GIL switches, which the sampler makes every 0.25 ms while an
outlier runs (5 ms otherwise); a sleeping one every 1 ms.

(c) Capture cost: the request thread's extra work for an outlier (reading its params) and the
writer thread's (building, compressing the session, reading CPU and memory), medians.

Run from the repository root::

    python benchmarks/bench_sampler.py            # full run, a few minutes
    python benchmarks/bench_sampler.py --quick    # smoke run

Results are printed and written to ``bench-out/bench_sampler.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from flask import Flask, g, request
from pyinstrument import Profiler

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.outliers import list_outliers, load_outlier, session_of
from flamewatch.sampler.capture import Capturer, CaptureSettings
from flamewatch.sampler.inflight import SAMPLING, Sampling, new_record
from flamewatch.sampler.resources import ResourceMonitor
from flamewatch.sampler.stack_sampler import walk_stack

NAME = "bench_sampler"


def spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def the_slow_function_cpu(ms: float) -> None:
    spin(ms)


def the_slow_function_sleep(ms: float) -> None:
    time.sleep(ms / 1000)


def make_app(variant: str, tmp: Path) -> Flask:
    app = Flask(f"bench-{variant}")

    @app.get("/cpu")
    def cpu() -> str:
        spin(20)
        return "cpu"

    @app.get("/io")
    def io() -> str:
        time.sleep(0.02)
        return "io"

    if variant in ("timing", "sampler", "aggregate"):
        Flamewatch(
            app,
            database=str(tmp / f"{variant}.sqlite3"),
            version="bench",
            sampler=variant != "timing",
            aggregate_profiles=variant == "aggregate",
        )
    elif variant == "pyinstrument":

        @app.before_request
        def start() -> None:
            g.profiler = Profiler(interval=0.001)
            g.profiler.start()

        @app.after_request
        def stop(response: Any) -> Any:
            g.profiler.stop()
            return response

    return app


def _thread_cpu_s(native_ids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named thread of this process."""
    by_id = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    return {name: by_id.get(native, 0.0) for name, native in native_ids.items()}


def _agent_threads(app: Flask) -> dict[str, int]:
    agent = app.extensions.get("flamewatch")
    found = {}
    for name in ("_sampler", "_writer"):
        worker = getattr(agent, name, None)
        thread = getattr(worker, "_thread", None)
        if thread is not None and thread.native_id is not None:
            found[name.strip("_")] = thread.native_id
    return found


#: per variant and thread, CPU microseconds per request (filled by :func:`throughput`)
THREAD_CPU_US: dict[str, dict[str, float]] = {}


def throughput(rounds: int, batch: int) -> dict[str, dict[str, float]]:
    variants = ("bare", "timing", "sampler", "aggregate", "pyinstrument")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        apps = {v: make_app(v, Path(tmp)) for v in variants}
        clients = {v: app.test_client() for v, app in apps.items()}
        for view in ("/cpu", "/io"):
            times: dict[str, list[float]] = {v: [] for v in variants}
            for client in clients.values():
                for _ in range(5):
                    client.get(view)
            # psutil reads thread times in clock ticks (10 ms): only totals over a view's
            # rounds are meaningful; they include each sampler's polling while idle
            threads = {v: _agent_threads(app) for v, app in apps.items()}
            before = {v: _thread_cpu_s(t) for v, t in threads.items()}
            for _ in range(rounds):
                for variant in variants:
                    gc.collect()
                    start = time.perf_counter_ns()
                    for _ in range(batch):
                        clients[variant].get(view)
                    times[variant].append((time.perf_counter_ns() - start) / batch / 1e6)
            results[view] = {v: statistics.median(t) for v, t in times.items()}
            for variant, by_thread in threads.items():
                after = _thread_cpu_s(by_thread)
                THREAD_CPU_US[f"{view} {variant}"] = {
                    name: (after[name] - before[variant][name]) / (rounds * batch) * 1e6
                    for name in by_thread
                }
        for app in apps.values():
            agent = app.extensions.get("flamewatch")
            if agent is not None:
                agent.close()
    return results


def fidelity(outliers: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database = str(Path(tmp) / "fidelity.sqlite3")
        app = Flask("fidelity")

        @app.get("/work")
        def work() -> str:
            kind = request.args.get("slow")
            if kind == "cpu":
                the_slow_function_cpu(60)
            elif kind == "sleep":
                the_slow_function_sleep(60)
            spin(2)
            return "ok"

        fw = Flamewatch(app, database=database, version="bench", profiles_per_hour=10_000)
        client = app.test_client()
        for _ in range(200):
            client.get("/work")
        fw.flush()
        for kind in ("cpu", "sleep"):
            for _ in range(outliers):
                client.get(f"/work?slow={kind}")
            fw.flush()
        fw.close()
        rows = [o for o in list_outliers(database) if o.duration_ms > 50]
        for kind in ("cpu", "sleep"):
            function = f"the_slow_function_{kind}"
            shares, coverage, ratio, samples = [], [], [], []
            # counted, not a crash: an outlier the sampler never reached is stored without a
            # profile, and says as much in its note
            without_profile = 0
            for outlier in rows:
                stored = load_outlier(database, outlier.id)
                if (stored["request"].get("query") or {}).get("slow") != kind:
                    continue
                if stored["profile"] is None:
                    without_profile += 1
                    continue
                session = session_of(stored)
                records = session.frame_records
                total = sum(s for _, s in records)
                inside = sum(s for st, s in records if any(f.startswith(function) for f in st))
                unsampled = sum(s for st, s in records if st[-1].startswith("[unsampled]"))
                shares.append(inside / total)
                coverage.append((total - unsampled) / (outlier.duration_ms / 1000))
                ratio.append(outlier.duration_ms / 2.0)
                samples.append(session.sample_count)
            profiled = bool(shares)
            found[kind] = {
                "outliers": len(shares) + without_profile,
                "without_profile": without_profile,
                "function_share_median": statistics.median(shares) if profiled else 0.0,
                "function_share_min": min(shares) if profiled else 0.0,
                "sampled_coverage_median": statistics.median(coverage) if profiled else 0.0,
                "sampled_coverage_min": min(coverage) if profiled else 0.0,
                "duration_over_mean_median": statistics.median(ratio) if profiled else 0.0,
                "samples_median": statistics.median(samples) if profiled else 0,
                "samples_min": min(samples) if profiled else 0,
            }
    return found


def capture_cost(n: int) -> dict[str, float]:
    """Micro-timings of the two halves of a capture, on a real outlier record."""
    app = Flask("capture")
    with tempfile.TemporaryDirectory() as tmp:
        fw = Flamewatch(app, database=str(Path(tmp) / "c.sqlite3"))
        agent = app.extensions["flamewatch"]
        describe_ns: list[int] = []
        with app.test_request_context(
            "/pay?order=12&token=abc", method="POST", json={"user": {"password": "x"}, "n": 1}
        ):
            for _ in range(n):
                request.__dict__.pop("_cached_json", None)
                start = time.perf_counter_ns()
                agent.describe_request(request._get_current_object(), read_body=True)  # type: ignore[attr-defined]
                describe_ns.append(time.perf_counter_ns() - start)
        fw.close()
    stack = walk_stack(sys._getframe())
    capturer = Capturer(CaptureSettings(), ResourceMonitor(), None)
    build_ns: list[int] = []
    for _ in range(n):
        record = new_record("e", "/e", 0, 1, 5_000_000)
        samples = [(i * 1_000_000, 1_000_000, stack) for i in range(1, 80)]
        record[SAMPLING] = Sampling(samples, 1_000_000, 0)
        start = time.perf_counter_ns()
        capturer.capture(record, 80_000_000, started_at=time.time(), facts={}, description="x")
        build_ns.append(time.perf_counter_ns() - start)
    return {
        "request_thread_params_us": statistics.median(describe_ns) / 1000,
        "writer_capture_ms_80_samples": statistics.median(build_ns) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    rounds, batch, outliers, n = (3, 20, 3, 20) if args.quick else (15, 50, 20, 200)
    results: dict[str, Any] = {"python": sys.version.split()[0], "quick": args.quick}

    results["throughput_ms_per_request"] = tp = throughput(rounds, batch)
    print(f"{'view':6} {'variant':13} {'ms/request':>11} {'vs bare':>9} {'vs timing':>10}")
    for view, by_variant in tp.items():
        for variant, ms in by_variant.items():
            vs_bare = (ms / by_variant["bare"] - 1) * 100
            vs_timing = (ms / by_variant["timing"] - 1) * 100
            print(f"{view:6} {variant:13} {ms:11.3f} {vs_bare:+8.2f}% {vs_timing:+9.2f}%")

    results["thread_cpu_us_per_request"] = THREAD_CPU_US
    print()
    print("background threads' CPU per request (µs):")
    for key, by_thread in THREAD_CPU_US.items():
        spent = ", ".join(f"{name} {us:.1f}" for name, us in sorted(by_thread.items()))
        print(f"  {key:20} {spent}")

    results["fidelity"] = fid = fidelity(outliers)
    print()
    for kind, f in fid.items():
        print(
            f"fidelity {kind:5}: {f['outliers']} outliers (~{f['duration_over_mean_median']:.0f}x"
            f" the mean), {f['without_profile']} without a profile;"
            f" {f['samples_median']:.0f} samples (min {f['samples_min']});"
            f" slow function holds {f['function_share_median']:.1%} of the profile"
            f" (min {f['function_share_min']:.1%}); samples cover"
            f" {f['sampled_coverage_median']:.1%} of the duration (min"
            f" {f['sampled_coverage_min']:.1%})"
        )

    results["capture_cost"] = cost = capture_cost(n)
    print()
    print(
        f"capture: request thread reads params in {cost['request_thread_params_us']:.1f} µs;"
        f" writer builds+compresses an 80-sample profile with CPU/memory in"
        f" {cost['writer_capture_ms_80_samples']:.2f} ms"
    )
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
