"""Aggregated profiles: what folding costs, how the store grows, how often the report is wrong,
and how long the report takes with them.

(a) Fold cost: :meth:`StackFolder.fold` (the sampler thread's extra work per finished request)
on real 40-deep stacks, and :meth:`StackFolder.drain` + :meth:`SQLiteStore.write_profiles`
(the writer's, every 10 s) -- medians.

(b) Store growth per million requests: requests folded as the agent folds them (1-5 samples
each, over 60 distinct stacks per endpoint, 10 endpoints, 20 users, 5 versions) and written
every 10,000 requests as the writer would every 10 s at 1,000 requests/s, into a real SQLite
file; the file's size against a file of the same requests' rows.

(c) The findings' error rates under a harsh noise model (``--findings``; the model and what is
counted: :mod:`harsh_history`): heavy tails (log-normal, 1 % of requests 20x slower), a slow
drift within versions, one-minute load bursts slowing every endpoint, users with 160 down to 4
requests per endpoint and version; four changes of 1.5x-3x planted per history (an endpoint
slower, one faster, one slower for one user, one slower from an hour inside a version). Counted
over all histories: false findings among the comparisons without a change, planted changes
missed, and version changes whose first call path is not the changed function's.

(c') The synthetic histories of (c) before the harsh model, written straight into a store (no
HTTP): 5 endpoints, 4 users, 3 versions, lognormal sigma 0.15 plus 2 % of requests three times
slower. Verdicts on binned data (``--verdicts``): on those histories, every version comparison
the report makes (per endpoint, and per user for the groups it compares) judged twice: as the
report does, from the latency histograms, and exactly, from the stored durations themselves
(nearest-rank medians, the median's interval at its order statistics, the Mann-Whitney test
with every distinct duration its own rank). Counted: comparisons whose verdicts agree, and each
one that does not, printed.

(d) Report build: the site of ``bench_report``'s synthetic store built with and without
aggregated profiles added to it (per endpoint, version and 20 users, 30 distinct stacks each:
600,000 rows for the 1M-request store's 50 endpoints and 20 versions).

Run from the repository root::

    python benchmarks/bench_flames.py            # full run, a few minutes
    python benchmarks/bench_flames.py --quick    # smoke run
    python benchmarks/bench_flames.py --verdicts # (c') only: binned against exact verdicts
    python benchmarks/bench_flames.py --findings # (c) only: the findings' error rates

Results are printed and written to ``bench-out/bench_flames.json``.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import CodeType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_report import store as synthetic
from harsh_history import get_request, history_errors, sampled

from flamewatch.reports.aggregate import MIN_CHANGE_REQUESTS, ReportData
from flamewatch.reports.change_tests import compare
from flamewatch.reports.distributions import Distributions, read_distributions
from flamewatch.reports.model import Change, Verdict
from flamewatch.reports.site import write_site
from flamewatch.reports.stats_tests import (
    QUANTILES,
    mann_whitney_p,
    median_ci_ranks,
    nearest_rank,
    ratio,
    verdict,
)
from flamewatch.reports.summary import open_readonly
from flamewatch.sampler.folding import StackFolder
from flamewatch.sampler.inflight import Sample, Stack
from flamewatch.sampler.store import ProcessInfo, RequestRecord, SQLiteStore

NAME = "bench_flames"
MS = 1_000_000


def _codes(prefix: str, n: int) -> list[CodeType]:
    """``n`` distinct functions' code objects, as a real app's would be."""
    found = []
    for i in range(n):
        namespace: dict[str, Any] = {}
        exec(compile(f"def {prefix}_{i}():\n    pass\n", f"/app/{prefix}.py", "exec"), namespace)
        found.append(namespace[f"{prefix}_{i}"].__code__)
    return found


STEM = _codes("flask_stem", 25)  # the server, WSGI and Flask frames every request shares


def _stacks(endpoint: int, distinct: int, rng: random.Random) -> list[Stack]:
    """``distinct`` stacks under one view: the stem, the view, then 2-15 frames of its code."""
    view = _codes(f"view{endpoint}", 1)[0]
    body = _codes(f"code{endpoint}", 40)
    stacks = []
    for _ in range(distinct):
        depth = rng.randint(2, 15)
        chain = [*STEM, view, *rng.sample(body, depth)]
        stacks.append(tuple((code, 1) for code in chain))
    return stacks


# -- (a) -------------------------------------------------------------------------------------


def fold_cost(n: int) -> dict[str, float]:
    rng = random.Random(1)
    stacks = _stacks(0, 60, rng)
    folder = StackFolder(entry_code=STEM[0])
    fold_ns = []
    for _ in range(n):
        samples: list[Sample] = [
            (10 * MS, 10 * MS, rng.choice(stacks)),
            (20 * MS, 10 * MS, rng.choice(stacks)),
        ]
        start = time.perf_counter_ns()
        folder.fold("ep", "user", samples, 0)
        fold_ns.append(time.perf_counter_ns() - start)
    write_ms = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "fold.sqlite3")
        store.open()
        try:
            process = store.register_process(ProcessInfo("h", 1, "v", "bench", 0.0, "bench"))
            for _ in range(20):
                for endpoint in range(10):
                    for _ in range(200):
                        samples = [(10 * MS, 10 * MS, rng.choice(stacks))]
                        folder.fold(f"ep{endpoint}", f"user{rng.randrange(20)}", samples, 0)
                start = time.perf_counter_ns()
                store.write_profiles(process, folder.drain())
                write_ms.append((time.perf_counter_ns() - start) / 1e6)
        finally:
            store.close()
    return {
        "fold_us_per_request_2_samples": statistics.median(fold_ns) / 1000,
        "drain_and_write_ms_per_flush": statistics.median(write_ms),
    }


# -- (b) -------------------------------------------------------------------------------------


def store_growth(requests: int) -> dict[str, Any]:
    rng = random.Random(2)
    endpoints = [_stacks(e, 60, rng) for e in range(10)]
    weights = [1 / (i + 1) for i in range(60)]  # a few stacks hold most of the time
    users = [f"user-{u}" for u in range(20)]
    sizes: dict[str, Any] = {"checkpoints": {}}
    with tempfile.TemporaryDirectory() as tmp:
        profiles = SQLiteStore(Path(tmp) / "profiles.sqlite3")
        plain = SQLiteStore(Path(tmp) / "requests.sqlite3")
        profiles.open()
        plain.open()
        try:
            per_version = requests // 5
            done = 0
            for version in range(5):
                info = ProcessInfo("h", version, f"v{version}", "bench", 0.0, "bench")
                folder = StackFolder(entry_code=STEM[0])
                p_id, r_id = profiles.register_process(info), plain.register_process(info)
                batch: list[RequestRecord] = []
                for i in range(per_version):
                    endpoint = rng.randrange(10)
                    user = rng.choice(users)
                    count = rng.randint(1, 5)
                    chosen = rng.choices(endpoints[endpoint], weights, k=count)
                    samples = [(k * 10 * MS, 10 * MS, s) for k, s in enumerate(chosen, 1)]
                    folder.fold(f"endpoint-{endpoint}", user, samples, 0)
                    batch.append(
                        RequestRecord(
                            f"endpoint-{endpoint}",
                            "/x",
                            "GET",
                            200,
                            1.7e9 + done,
                            10.0 * count,
                            user,
                            "10.0.0.1",
                            False,
                            20.0,
                        )
                    )
                    done += 1
                    if len(batch) == 10_000 or i == per_version - 1:
                        plain.write_requests(r_id, batch)
                        batch = []
                        profiles.write_profiles(p_id, folder.drain())
                    if done % (requests // 4) == 0:
                        sizes["checkpoints"][done] = _size(profiles.path)
            rows = profiles.conn.execute("SELECT count(*) FROM profile_stacks").fetchone()[0]
        finally:
            profiles.close()
            plain.close()
        sizes["requests"] = requests
        sizes["profile_rows"] = rows
        sizes["profiles_bytes"] = _size(Path(tmp) / "profiles.sqlite3")
        sizes["requests_bytes"] = _size(Path(tmp) / "requests.sqlite3")
    return sizes


def _size(path: Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


# -- (c) -------------------------------------------------------------------------------------

ENDPOINTS = ("index", "item", "feed", "orders", "search")
USERS = ("alice", "bob", "carol", "dave")
_NAMES = ("entry", "view", "load_page", "render_feed", "apply_discounts", "rank_results")
_FN = {name: _codes(name, 1)[0].replace(co_name=name, co_qualname=name) for name in _NAMES}


def _work(endpoint: str, version: str, user: str) -> list[tuple[str, float]]:
    """The functions a request runs and their ms, before noise."""
    work = [("view", 0.3), ("load_page", 4.0)]
    if endpoint == "feed":
        work.append(("render_feed", 14.0 if version >= "v2" else 4.0))
    elif endpoint == "orders":
        work.append(("apply_discounts", 14.0 if version >= "v3" and user == "carol" else 3.0))
    elif endpoint == "search":
        work.append(("rank_results", 2.0 if version >= "v3" else 12.0))
    return work


def _stack(function: str) -> Stack:
    """The stack of a request while in ``function``: the entry, the view, then the function."""
    stack: Stack = ((_FN["entry"], 1), (_FN["view"], 1))
    return stack if function == "view" else (*stack, (_FN[function], 1))


def write_history(path: Path, seed: int, per_cell: int) -> None:
    """One synthetic history, its requests and aggregated profiles, in a new SQLite store."""
    rng = random.Random(seed)
    store = SQLiteStore(path)
    store.open()
    try:
        for version in ("v1", "v2", "v3"):
            process = store.register_process(ProcessInfo("h", 1, version, "bench", 0.0, "b"))
            folder = StackFolder(entry_code=_FN["entry"])
            records = []
            for endpoint in ENDPOINTS:
                for user in USERS:
                    for _ in range(per_cell):
                        noise = math.exp(rng.gauss(0, 0.15)) * (3 if rng.random() < 0.02 else 1)
                        work = _work(endpoint, version, user)
                        samples, t = sampled(((_stack(f), ms) for f, ms in work), noise)
                        folder.fold(endpoint, user, samples, 0)
                        records.append(get_request(endpoint, time.time(), t + 0.5, user))
            store.write_requests(process, records)
            store.write_profiles(process, folder.drain())
    finally:
        store.close()


def findings_rates(histories: int) -> dict[str, Any]:
    """(c): the harsh noise model's histories (:mod:`harsh_history`), their errors counted."""
    counts = {"histories": histories, "comparisons_without_a_change": 0, "false_findings": 0}
    counts |= {"planted": 0, "missed": 0, "culprits_checked": 0, "wrong_culprit": 0}
    examples: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(histories):
            found = history_errors(Path(tmp) / f"h{seed}.sqlite3", seed)
            counts["comparisons_without_a_change"] += found["comparisons"]
            counts["planted"] += len(found["planted"])
            counts["culprits_checked"] += found["blamed"]
            counts["false_findings"] += len(found["false"])
            counts["missed"] += len(found["missed"])
            counts["wrong_culprit"] += len(found["wrong_culprit"])
            examples += [
                f"history {seed}: false {f.endpoint} {f.version}/{f.against} {f.verdict}"
                f" group={f.group} kind={f.kind} x{f.ratio:.2f} p={f.p_value:.2g}"
                for f in found["false"]
            ]
            examples += [f"history {seed}: missed {p}" for p in found["missed"]]
            examples += [f"history {seed}: culprit {n} for {p}" for p, n in found["wrong_culprit"]]
    counts["false_finding_rate"] = counts["false_findings"] / counts["comparisons_without_a_change"]
    counts["missed_rate"] = counts["missed"] / counts["planted"]
    counts["culprit_right_rate"] = 1 - counts["wrong_culprit"] / max(counts["culprits_checked"], 1)
    counts["errors"] = examples
    return counts


def _print_rates(rates: dict[str, Any]) -> None:
    print(
        f"findings over {rates['histories']} harsh histories: false findings"
        f" {rates['false_findings']} in {rates['comparisons_without_a_change']:,} comparisons"
        f" without a change ({rates['false_finding_rate']:.4%}); missed {rates['missed']} of"
        f" {rates['planted']} planted changes of 1.5x-3x ({rates['missed_rate']:.2%}); culprit"
        f" path right {rates['culprit_right_rate']:.2%} (wrong {rates['wrong_culprit']} of"
        f" {rates['culprits_checked']} version changes found)"
    )
    for line in rates["errors"]:
        print(f"  {line}")


# -- (c') ---------------------------------------------------------------------------------------

Comparison = tuple[str, str, str, str | None]  # endpoint, previous version, version, group


def exact_verdict(
    before: list[float], after: list[float], threshold: float = 0.2, alpha: float = 0.01
) -> tuple[Verdict, float, float]:
    """The verdict of the durations themselves (sorted): what the report said before it read
    histograms. Returns (verdict, ratio of the medians, p-value)."""

    def at(values: list[float], rank: int) -> float:
        return values[rank - 1]

    def median(values: list[float]) -> float:
        return at(values, nearest_rank(QUANTILES["median"], len(values)))

    def bounds(values: list[float]) -> tuple[float, float]:
        low, high = median_ci_ranks(len(values))
        return at(values, low), at(values, high)

    (old_low, old_high), (new_low, new_high) = bounds(before), bounds(after)
    low, high = ratio(new_low, old_high), ratio(new_high, old_low)
    change = ratio(median(after), median(before))
    u = 0.0
    for x in after:  # old values below x, ties count half
        below = bisect.bisect_left(before, x)
        u += below + (bisect.bisect_right(before, x, below) - below) / 2
    pooled: dict[float, int] = {}
    for x in before + after:
        pooled[x] = pooled.get(x, 0) + 1
    ties = sum(t**3 - t for t in pooled.values() if t > 1)
    n = len(after)
    p_value = mann_whitney_p(n, len(before), u + n * (n + 1) / 2, ties)
    return verdict(change, low, high, p_value, threshold, alpha), change, p_value


def history_verdicts(path: Path) -> dict[Comparison, tuple[Verdict, Verdict, float, float, float]]:
    """Every comparison of a history's report: (binned verdict, exact verdict, binned ratio,
    exact ratio, exact p-value)."""
    with open_readonly(str(path)) as conn:
        data = ReportData(conn)
        binned = {(c.endpoint, c.previous, c.version, None): c for c in data.changes()}
        binned.update(group_comparisons(read_distributions(conn), data))
        durations: dict[tuple[str, str, str | None], list[float]] = {}
        for endpoint, version, group, ms in conn.execute(
            "SELECT e.name, v.name, g.name, r.duration_ms FROM requests r"
            " JOIN endpoints e ON e.id = r.endpoint_id JOIN versions v ON v.id = r.version_id"
            " LEFT JOIN user_groups g ON g.id = r.group_id"
        ):
            durations.setdefault((endpoint, version, None), []).append(ms)
            durations.setdefault((endpoint, version, group), []).append(ms)
    for values in durations.values():
        values.sort()
    found = {}
    for (endpoint, old, new, group), change in binned.items():
        exact, exact_ratio, p_value = exact_verdict(
            durations[(endpoint, old, group)], durations[(endpoint, new, group)]
        )
        found[(endpoint, old, new, group)] = (
            change.verdict,
            exact,
            change.ratio,
            exact_ratio,
            p_value,
        )
    return found


def group_comparisons(distributions: Distributions, data: ReportData) -> dict[Comparison, Change]:
    """Each group's versions next to each other (of one kind, each with enough requests),
    compared from their histograms as the findings compare a group's pair in full."""
    found: dict[Comparison, Change] = {}
    for endpoint in distributions.endpoints():
        for group, series in distributions.by_group(endpoint).items():
            for kind in distributions.of_one_kind():
                present = [
                    v for v in kind if v in series and series[v].total >= MIN_CHANGE_REQUESTS
                ]
                for old, new in itertools.pairwise(present):
                    found[(endpoint, old, new, group)] = compare(
                        endpoint,
                        old,
                        new,
                        series[old],
                        series[new],
                        threshold=data.change_threshold,
                        alpha=data.alpha,
                    )
    return found


def verdict_agreement(histories: int, per_cell: int) -> dict[str, Any]:
    """(c'): binned against exact verdicts over ``histories`` histories."""
    agree = 0
    disagreements: list[dict[str, Any]] = []
    by_verdict: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(histories):
            path = Path(tmp) / f"v{seed}.sqlite3"
            write_history(path, seed, per_cell)
            for key, (binned, exact, b_ratio, e_ratio, p) in history_verdicts(path).items():
                by_verdict[exact] = by_verdict.get(exact, 0) + 1
                if binned == exact:
                    agree += 1
                    continue
                disagreements.append(
                    {
                        "history": seed,
                        "comparison": key,
                        "exact": exact,
                        "binned": binned,
                        "exact_ratio": e_ratio,
                        "binned_ratio": b_ratio,
                        "exact_p": p,
                    }
                )
            path.unlink()
    return {
        "histories": histories,
        "comparisons": agree + len(disagreements),
        "agree": agree,
        "disagree": len(disagreements),
        "exact_verdicts": by_verdict,
        "disagreements": disagreements,
    }


# -- (d) -------------------------------------------------------------------------------------


def report_build(requests: int, stacks: int) -> dict[str, Any]:
    base = synthetic(requests, 100)
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with_profiles = Path(tmp) / "with.sqlite3"
        shutil.copyfile(base, with_profiles)
        rng = random.Random(3)
        store = SQLiteStore(with_profiles)
        store.open()
        try:
            endpoints = [n for (n,) in store.conn.execute("SELECT name FROM endpoints")]
            versions = [n for (n,) in store.conn.execute("SELECT name FROM versions")]
            users = [n for (n,) in store.conn.execute("SELECT name FROM user_groups LIMIT 20")]
            pools = {e: _stacks(i, stacks, rng) for i, e in enumerate(endpoints)}
            for version in versions:
                process = store.register_process(ProcessInfo("h", 1, version, "b", 0.0, "b"))
                folder = StackFolder(entry_code=STEM[0])
                for endpoint in endpoints:
                    for user in users:
                        for s in pools[endpoint]:
                            folder.fold(endpoint, user, [(10 * MS, 10 * MS, s)], 0)
                store.write_profiles(process, folder.drain())
            found["profile_rows"] = store.conn.execute(
                "SELECT count(*) FROM profile_stacks"
            ).fetchone()[0]
        finally:
            store.close()
        for label, database in (("without", base), ("with", with_profiles)):
            times = []
            for _ in range(2):
                out = Path(tmp) / f"site-{label}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                write_site(str(database), out)
                times.append(time.perf_counter() - start)
            found[f"build_s_{label}"] = min(times)
            found[f"site_bytes_{label}"] = sum(
                f.stat().st_size for f in out.rglob("*") if f.is_file()
            )
            found[f"largest_page_bytes_{label}"] = max(
                f.stat().st_size for f in out.rglob("*.html")
            )
    found["requests"] = requests
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--histories", type=int, default=None)
    parser.add_argument(
        "--verdicts", action="store_true", help="only (c'): binned against exact verdicts"
    )
    parser.add_argument(
        "--findings", action="store_true", help="only (c): the findings' error rates"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    results: dict[str, Any] = {"python": sys.version.split()[0], "quick": quick}
    if args.verdicts:
        return _verdicts_only(args.histories or (10 if quick else 200))
    if args.findings:
        results["findings"] = rates = findings_rates(args.histories or (10 if quick else 200))
        _print_rates(rates)
        out = Path("bench-out")
        out.mkdir(exist_ok=True)
        (out / f"{NAME}-findings.json").write_text(json.dumps(results, indent=2, default=str))
        return 0

    results["fold"] = fold = fold_cost(2000 if quick else 20_000)
    write_ms = fold["drain_and_write_ms_per_flush"]
    print(
        f"fold: {fold['fold_us_per_request_2_samples']:.1f} µs per request (2 samples) on the"
        f" sampler thread; drain + write of a 10 s flush {write_ms:.1f} ms"
    )
    results["growth"] = growth = store_growth(100_000 if quick else 1_000_000)
    per_million = 1_000_000 / growth["requests"]
    print(
        f"store: {growth['requests']:,} requests -> aggregated profiles"
        f" {growth['profiles_bytes'] / 2**20:.2f} MiB ({growth['profile_rows']:,} rows);"
        f" the requests' own rows {growth['requests_bytes'] / 2**20:.1f} MiB"
        f" (per million: {growth['profiles_bytes'] * per_million / 2**20:.2f} vs"
        f" {growth['requests_bytes'] * per_million / 2**20:.1f} MiB); at checkpoints:"
        f" {growth['checkpoints']}"
    )
    histories = args.histories or (10 if quick else 200)
    results["findings"] = rates = findings_rates(histories)
    _print_rates(rates)
    results["report"] = report = report_build(100_000 if quick else 1_000_000, 10 if quick else 30)
    print(
        f"report: {report['requests']:,} requests, {report['profile_rows']:,} profile rows:"
        f" {report['build_s_without']:.1f} s without the profiles, {report['build_s_with']:.1f} s"
        f" with; site {report['site_bytes_without'] / 2**20:.0f} ->"
        f" {report['site_bytes_with'] / 2**20:.0f} MiB,"
        f" largest page {report['largest_page_bytes_with'] / 1024:.0f} KiB"
    )
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


def _verdicts_only(histories: int) -> int:
    found = verdict_agreement(histories, 15)
    print(
        f"verdicts on binned data against exact ones: {found['agree']} of"
        f" {found['comparisons']:,} comparisons agree, {found['disagree']} disagree"
        f" ({histories} histories; exact verdicts: {found['exact_verdicts']})"
    )
    for d in found["disagreements"]:
        endpoint, old, new, group = d["comparison"]
        who = "all users" if group is None else group
        print(
            f"  history {d['history']}: {endpoint} {old} -> {new} ({who}): exact {d['exact']}"
            f" (ratio {d['exact_ratio']:.3f}, p {d['exact_p']:.2g}), binned {d['binned']}"
            f" (ratio {d['binned_ratio']:.3f})"
        )
    out = Path("bench-out")
    out.mkdir(exist_ok=True)
    (out / f"{NAME}-verdicts.json").write_text(json.dumps(found, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
