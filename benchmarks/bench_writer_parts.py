"""Where the writer's instructions per request go, part by part, counted by valgrind.

``bench_instructions.py`` gives the writer thread's instructions per request as one figure.
This splits it: a child serves N test-client requests to the trivial view with the writer
asleep (as ``bench_instructions.py`` does), then runs the writer's ingest itself on its own
thread -- ``Ingest.drain`` and ``Ingest.write_pending``, the writer thread's code -- with a
marker call (``zlib.crc32``) at each boundary between parts. valgrind's callgrind dumps its
counters at every marker (``--dump-before=zlib_crc32``), so each part's instructions land in
a file of their own. The child runs the whole once with N1 and once with N2 requests, and a
part's figure is the difference divided by ``N2 - N1``: what each request adds, with the
per-batch costs cancelled out, as in ``bench_instructions.py``.

The parts, in the order they run:

- ``drain loop``: :meth:`Ingest.drain` without the statistics (queue to pending records);
- ``thresholds``: :meth:`Thresholds.update`, the running statistics fed once per endpoint;
- ``rows loop``: :meth:`SQLStore._request_rows` up to the histograms' fold (names' ids,
  rows, each record's histogram cell);
- ``fold cells``: :func:`~flamewatch.sampler.store.histograms.fold_cells`;
- ``insert rows``: the ``requests`` rows' ``executemany`` (binding and SQLite's B-trees);
- ``upsert histograms``: :func:`~flamewatch.sampler.store.histograms.upsert_histograms`;
- ``commit and rest``: what follows (``last_accessed``, ``COMMIT``: the WAL's page writes).

With ``--keep DIR`` the callgrind files stay in ``DIR`` (``parts-N.cg.K``, K the dump's
number) for ``callgrind_annotate --inclusive=yes``: the C functions under each part.

Run from the repository root (needs ``valgrind``; about two minutes)::

    python benchmarks/bench_writer_parts.py
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNS = (1000, 3000)
WARM_UP = 200
#: the parts, in the order their dumps come (one more dump precedes them: serving and set-up)
PARTS = (
    "drain loop",
    "thresholds",
    "write set-up",
    "rows loop",
    "fold cells",
    "insert rows",
    "upsert histograms",
    "commit and rest",
)


def mark() -> None:
    """A boundary between two parts: callgrind dumps its counters when this is entered."""
    zlib.crc32(b"")


def _marked(function: Callable[..., Any], before: bool = True, after: bool = True) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            mark()
        try:
            return function(*args, **kwargs)
        finally:
            if after:
                mark()

    return wrapper


def child(n: int) -> None:
    """Serve ``n`` requests with the writer asleep, then ingest them with markers (runs under
    valgrind)."""
    sys.path.insert(0, str(HERE))
    import bench_overhead as bo  # noqa: PLC0415 -- valgrind child only

    from flamewatch.sampler.store import sql, sqlite  # noqa: PLC0415 -- valgrind child only

    tmp = Path(tempfile.mkdtemp(prefix="fw-parts-"))
    try:
        setup = bo.setup_flamewatch(tmp, 10, sampler=False, outlier_min_ms=60_000)
        client = setup.app.test_client()
        for _ in range(WARM_UP):
            client.get("/trivial").get_data()
        agent = setup.app.extensions["flamewatch"]
        bo.quiet_writer(agent, True)
        setup.drain()
        writer = agent._writer
        ingest, store = writer.ingest, writer.store
        # the boundaries: around the statistics, the rows loop's start, around the fold (which
        # ends the rows loop), around the histograms' upsert (which ends the rows' insert)
        thresholds = writer.thresholds
        thresholds.update = _marked(thresholds.update)
        sql.fold_cells = _marked(sql.fold_cells)
        store._request_rows = _marked(store._request_rows, after=False)
        sqlite.upsert_histograms = _marked(sqlite.upsert_histograms)
        gc.collect()
        gc.freeze()
        for _ in range(n):
            client.get("/trivial").get_data()

        def ingest_all() -> None:
            mark()  # start of the drain loop
            ingest.drain()
            ingest.write_pending()
            mark()  # end of the commit and the rest

        # on a thread of its own, as the writer runs it (the GIL handed over as it is there)
        thread = threading.Thread(target=ingest_all)
        thread.start()
        thread.join()
        bo.quiet_writer(agent, False)
        setup.drain()
        setup.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def count(n: int, work: Path) -> list[int]:
    """Instructions between consecutive markers of one child run (every thread summed)."""
    out = work / f"parts-{n}.cg"
    fixed_layout = ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []
    subprocess.run(
        [
            *fixed_layout,
            "valgrind",
            "--tool=callgrind",
            "--dump-before=zlib_crc32",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            str(n),
        ],
        check=True,
        env=dict(os.environ, PYTHONHASHSEED="0"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dumps = sorted(work.glob(f"{out.name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    totals = []
    for path in dumps:
        match = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        totals.append(int(match.group(1)) if match else 0)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files here")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="fw-parts-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        short, long = (count(n, work) for n in RUNS)
    # dump 1 ends at the first marker (serving, set-up); the parts follow it in order
    if len(short) < len(PARTS) + 1 or len(long) < len(PARTS) + 1:
        print(f"unexpected dumps: {len(short)} and {len(long)}", file=sys.stderr)
        return 1
    parts = len(PARTS)
    per_request = [
        (b - a) / (RUNS[1] - RUNS[0])
        for a, b in zip(short[1 : parts + 1], long[1 : parts + 1], strict=True)
    ]
    print("Writer's instructions per request, by part (valgrind callgrind, test client)")
    for name, value in zip(PARTS, per_request, strict=True):
        print(f"  {name:20} {value:10,.0f}")
    print(f"  {'all parts':20} {sum(per_request):10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
