"""The sampler walks other threads' frames; on CPython 3.11 that can crash the app's process.

Seen here as a segmentation fault in about one ``flamewatch demo`` run in ten on a loaded
machine; ``frame_walk_child.py`` makes the crash's sequence happen every time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = Path(__file__).with_name("frame_walk_child.py")


def test_a_collection_inside_the_frame_walk_cannot_free_the_frames_it_reads() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(CHILD)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the thread was sampled where it waited, whole, and stayed there during the walk
    assert "outer middle inner wait" in done.stdout
