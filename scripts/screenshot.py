"""Take docs/report.png: the demo's report site, its index page, in headless Chromium.

Run from the repository with the package installed (``pip install -e '.[test]'``, for
Playwright; Debian's ``chromium``, as ``scripts/install-chromium`` installs it)::

    .venv/bin/python scripts/screenshot.py [--output docs/report.png] [--requests 600] [--keep DIR]

It runs ``flamewatch demo`` into a temporary folder (the README's demo: a sample shop under
traffic across three versions), opens the site's ``index.html`` from disk, waits for the
charts to draw, and saves a PNG of the whole page, 1280 pixels wide. The demo's timings come from
a real server on this machine, so each run's picture differs a little.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import ViewportSize, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# without these, Chromium tries Google's services at start, which a closed network refuses
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: the page is 1280 pixels wide; the picture is as tall as the page, and this at least
VIEWPORT: ViewportSize = {"width": 1280, "height": 400}


def build_demo_site(folder: Path, requests: int) -> Path:
    """Run the demo into ``folder``; the path of its report site's index page."""
    command = Path(sys.executable).with_name("flamewatch")
    subprocess.run(
        [str(command), "demo", "--output", str(folder), "--requests", str(requests)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    index = folder / "site" / "index.html"
    if not index.is_file():
        raise SystemExit(f"the demo wrote no report site at {index}")
    return index


def screenshot(index: Path, output: Path) -> None:
    """Save a PNG of ``index``'s first screen once every chart on it has drawn."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(index.as_uri(), wait_until="load")
            page.wait_for_function(
                "[...document.querySelectorAll('[data-figure]')]"
                ".every(chart => chart.querySelector('svg.main-svg'))"
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--requests", type=int, default=600, help="requests per demo version")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the demo's store and site in DIR/flamewatch-demo (to quote its summary)",
    )
    arguments = parser.parse_args()
    if arguments.keep is not None:
        arguments.keep.mkdir(parents=True, exist_ok=True)
        index = build_demo_site(arguments.keep.resolve() / "flamewatch-demo", arguments.requests)
        screenshot(index, arguments.output)
    else:
        with tempfile.TemporaryDirectory(prefix="flamewatch-screenshot-") as folder:
            index = build_demo_site(Path(folder) / "flamewatch-demo", arguments.requests)
            screenshot(index, arguments.output)
    size = arguments.output.stat().st_size
    sys.stdout.write(f"{arguments.output} ({size:,} bytes)\n")


if __name__ == "__main__":
    main()
