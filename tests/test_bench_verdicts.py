"""``benchmarks/bench_flames.py --verdicts`` -- the figure docs/statistics.md quotes for the
binned verdicts against the exact ones -- runs, and compares the groups too.

It broke once unnoticed (it read a report attribute the findings' rewrite removed), so a few
of its histories run here, in a child process from a scratch directory, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_flames.py"


def test_verdicts_benchmark_judges_endpoints_and_groups(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--verdicts", "--histories", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "comparisons agree" in done.stdout
    found = json.loads((tmp_path / "bench-out" / "bench_flames-verdicts.json").read_text())
    assert found["comparisons"] == found["agree"] + found["disagree"] > 0
    # 5 endpoints x 2 version pairs per history, for everyone and for each of the 4 users
    assert found["comparisons"] == 3 * 5 * 2 * (1 + 4)
    for difference in found["disagreements"]:  # never a regression found on one side only
        assert "slower" not in (difference["exact"], difference["binned"])
        assert "faster" not in (difference["exact"], difference["binned"])
