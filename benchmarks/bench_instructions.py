"""Instructions per request, counted by valgrind: a figure that machine noise cannot move.

Wall-clock overhead on a shared 2-core VM moves by a few µs from run to run -- as much as
flamewatch's whole cost (``bench_overhead.py``). This benchmark counts the CPU instructions
instead: each variant serves N1 and then N2 requests to the trivial view through direct WSGI
calls (no test client) in a child process run under ``valgrind --tool=callgrind
--separate-threads=yes`` with ``PYTHONHASHSEED=0`` and address-space randomisation off
(``setarch -R``); the difference of the two runs divided by ``N2 - N1`` is the per-request
count, with start-up and imports cancelled out. Before counting,
each child serves a few hundred requests and freezes what is alive then (``gc.freeze()``), so
that a full collection of the process's long-lived objects, which falls in one run and not the
other, does not move the difference; for the same reason flamewatch's writer sleeps while the
requests are served and stores them all at the end (in fewer, larger batches than it would
live, so the all-threads figure is a little lower than its live cost). It is reported
for the thread that serves the requests and for all threads (flamewatch's writer, FMD's
per-request threads).

Variants: ``bare`` Flask; ``flamewatch`` with its stack sampler off (under valgrind everything
runs ~50x slower, so a sampler ticking every 10 ms would wake about once per request instead of
once per ~75: its share would be overstated; ``bench_sampler.py`` measures it); ``floor``, a
do-nothing middleware and dispatch wrapper (the price of this hook design); ``sketch``, the
issue's sketch of the request thread's work (two clock reads, a dict update and a queue put, in
a middleware that knows only the environ: ``bench_overhead.sketch_app``); and
Flask-MonitoringDashboard 5.1 at level 1 when it is installed.

Instructions are not time (cache misses and thread hand-offs are not counted), so the added
count is also given as a share of a bare request's: multiplied by a bare request's wall time
on a given machine, it estimates the added time there.

Run from the repository root (needs ``valgrind``; about 5 minutes)::

    python benchmarks/bench_instructions.py
    python benchmarks/bench_instructions.py --via client --variants flamewatch  # as bench_overhead

``--baseline DIR`` counts the same variants again with another checkout of flamewatch (its
``DIR/.venv/bin/python`` and ``DIR/benchmarks/bench_instructions.py``), in the same run, each
compared with its own bare request: a change's cost side by side with the code before it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE.parent / "bench-out"
VARIANTS = ("bare", "floor", "sketch", "flamewatch", "fmd")
#: requests in the short and the long run of each variant (FMD starts a thread per request)
RUNS = {
    "bare": (1000, 3000),
    "floor": (1000, 3000),
    "sketch": (1000, 3000),
    "flamewatch": (1000, 3000),
    "fmd": (100, 300),
}
#: requests served before counting starts (caches filled, bytecode specialised, then gc.freeze)
WARM_UP = 200


def child(variant: str, n: int, via: str = "wsgi") -> None:
    """Serve ``n`` trivial requests on ``variant`` (runs under valgrind)."""
    sys.path.insert(0, str(HERE))
    import bench_overhead as bo  # noqa: PLC0415 -- valgrind child only

    tmp = Path(tempfile.mkdtemp(prefix="fw-instr-"))
    try:
        if variant == "bare":
            setup = bo.setup_bare(10)
        elif variant == "floor":
            setup = bo.Variant("floor", bo.passthrough_app(10), lambda: None, dict)
        elif variant == "sketch":
            sketch, drain = bo.sketch_app(10)
            setup = bo.Variant("sketch", sketch, drain, dict)
        elif variant == "flamewatch":
            # Under valgrind a request takes ~50x longer and its duration varies with the
            # machine: a few would be flagged as outliers (their facts read on the request
            # thread), a different few in each run. The threshold is still checked on every
            # request; it is just never crossed, which is the normal request's path.
            setup = bo.setup_flamewatch(tmp, 10, sampler=False, outlier_min_ms=60_000)
        else:
            fmd = bo.setup_fmd(tmp, 10)
            if fmd is None:
                raise SystemExit(f"FMD is not installed: {bo.FMD_INSTALL}")
            setup = fmd
        if via == "client":
            client = setup.app.test_client()

            def call() -> object:
                return client.get("/trivial").get_data()

        else:
            call = bo.wsgi_caller(setup.app, "/trivial")
        for _ in range(WARM_UP):
            call()
        # flamewatch's writer waits until the end: while it ran, its allocations would start
        # collections on the serving thread at moments that differ from run to run
        agent = setup.app.extensions.get("flamewatch") if variant == "flamewatch" else None
        quiet = agent is not None and bo.quiet_writer(agent, True)
        setup.drain()  # the writer's last round before the count; it then sleeps
        # The app's and the libraries' long-lived objects would otherwise be traversed by a
        # full collection every few thousand requests: a cost of any Flask app, and one that
        # lands in one run and not the other, moving the difference by ~1,000 instructions.
        gc.collect()
        gc.freeze()
        for _ in range(n):
            call()
        if quiet:
            bo.quiet_writer(agent, False)
        setup.drain()
        setup.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def count(
    variant: str, n: int, work: Path, via: str = "wsgi", tree: Path | None = None
) -> dict[str, int]:
    """Instructions of each thread of one child run, by :func:`thread_name`; ``tree``: run
    the child of another checkout (with its own virtualenv) instead of this one."""
    out = work / f"{variant}-{n}{'-base' if tree else ''}.cg"
    python, script = (
        (sys.executable, __file__)
        if tree is None
        else (
            str(tree / ".venv" / "bin" / "python"),
            str(tree / "benchmarks" / Path(__file__).name),
        )
    )
    env = dict(os.environ, PYTHONHASHSEED="0")
    # Without address-space randomisation flamewatch's count repeats to within ~100
    # instructions per request; with it, it moved by up to ~1,500 from run to run. (Only for
    # the same code: a change to anything the child imports moves the layout, and even bare
    # Flask's count by up to ~1,000; compare a change by function, with callgrind_annotate.)
    fixed_layout = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
    subprocess.run(
        [
            *fixed_layout,
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            python,
            script,
            "--child",
            variant,
            str(n),
            via,
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    totals = {}
    for path in sorted(work.glob(f"{out.name}-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])):
        text = path.read_text(errors="replace")
        match = re.search(r"^summary: (\d+)", text, re.MULTILINE)
        if match:
            totals[thread_name(int(path.name.rsplit("-", 1)[1]), text)] = int(match.group(1))
    return totals


def thread_name(number: int, callgrind_text: str) -> str:
    """What a thread of the child is, from its number and the C functions it ran: the first
    serves the requests; flamewatch's writer is the one that runs SQLite's virtual machine
    (the stack sampler is off); another is named by its number."""
    if number == 1:
        return "serving"
    if "sqlite3VdbeExec" in callgrind_text:
        return "writer"
    return f"thread {number}"


def fmd_installed() -> bool:
    try:
        import flask_monitoringdashboard  # noqa: F401, PLC0415 -- optional (bench extra)
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "N", "VIA"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--via",
        choices=("wsgi", "client"),
        default="wsgi",
        help="serve the requests by direct WSGI calls (the default) or through Flask's test"
        " client, as bench_overhead.py does (twice the instructions per request)",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS)
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="keep the callgrind files here (one per thread and run), for callgrind_annotate",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also count the variants with the flamewatch checkout in DIR (DIR/.venv)",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    wanted = {"bare", *args.variants.split(",")}
    variants = [v for v in VARIANTS if v in wanted and (v != "fmd" or fmd_installed())]
    per_request: dict[str, dict[str, float]] = {}
    threads: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fw-instr-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        trees: list[Path | None] = [None] if args.baseline is None else [None, args.baseline]
        for tree in trees:
            for variant in variants:
                label = variant if tree is None else f"{variant}@base"
                n1, n2 = RUNS[variant]
                short = count(variant, n1, work, args.via, tree)
                long = count(variant, n2, work, args.via, tree)
                names = [*long, *(name for name in short if name not in long)]
                threads[label] = {
                    name: (long.get(name, 0) - short.get(name, 0)) / (n2 - n1) for name in names
                }
                per_request[label] = {
                    "serving_thread": threads[label]["serving"],
                    "all_threads": sum(threads[label].values()),
                }
                print(f"  {label:12} measured", flush=True)

    def bare_of(label: str) -> dict[str, float]:
        return per_request["bare@base" if label.endswith("@base") else "bare"]

    how = "direct WSGI calls" if args.via == "wsgi" else "Flask's test client"
    print(f"\nInstructions per trivial request (valgrind callgrind, {how})")
    print(
        f"  {'variant':12} {'serving thread':>15} {'added':>10} {'share':>7}"
        f" {'all threads':>12} {'added':>10} {'share':>7}"
    )
    result: dict[str, Any] = {
        "via": args.via,
        "per_request": per_request,
        "per_thread": threads,
        "added": {},
    }
    if args.baseline is not None:
        result["baseline"] = str(args.baseline)
    for variant, figures in per_request.items():
        bare = bare_of(variant)
        added = figures["serving_thread"] - bare["serving_thread"]
        added_all = figures["all_threads"] - bare["all_threads"]
        result["added"][variant] = {"serving_thread": added, "all_threads": added_all}
        print(
            f"  {variant:12} {figures['serving_thread']:15,.0f} {added:+10,.0f}"
            f" {added / bare['serving_thread']:7.1%} {figures['all_threads']:12,.0f}"
            f" {added_all:+10,.0f} {added_all / bare['all_threads']:7.1%}"
        )
    print("\nPer thread (instructions per request; shares of a bare request's, all threads)")
    for variant, named in threads.items():
        bare = bare_of(variant)
        split = ", ".join(
            f"{name} {value:,.0f} ({value / bare['all_threads']:.1%})"
            for name, value in named.items()
        )
        print(f"  {variant:12} {split}")
    if "fmd" in per_request:
        fw, fmd = result["added"]["flamewatch"], result["added"]["fmd"]
        for scope in ("serving_thread", "all_threads"):
            ratio = fmd[scope] / fw[scope] if fw[scope] > 0 else float("inf")
            result[f"fmd_over_flamewatch_{scope}"] = ratio
            print(f"  FMD added / flamewatch added ({scope.replace('_', ' ')}): {ratio:,.0f}x")
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / (
        "bench_instructions.json" if args.via == "wsgi" else "bench_instructions_client.json"
    )
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
