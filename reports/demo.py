"""The demo: the sample app served by a real threaded server, under traffic from several
users, across three versions; then what changed and why, and a summary of what flamewatch
stored."""

from __future__ import annotations

import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from werkzeug.serving import WSGIRequestHandler, make_server

from .demo_app import USERS, create_app
from .finding_words import describe
from .findings import read_findings

__all__ = ["VERSIONS", "run_demo", "why_it_changed"]

VERSIONS = ("1.0.0", "1.1.0", "1.2.0")

# (weight, method, path) of the traffic mix
_TRAFFIC = (
    (20, "GET", "/"),
    (25, "GET", "/api/items"),
    (20, "GET", "/api/items/{n}"),
    (20, "GET", "/api/search?q={q}"),
    (8, "POST", "/api/cart"),
    (3, "GET", "/export.csv"),
    (4, "GET", "/api/items/9999"),  # a 404 from abort()
)


def run_demo(
    output: Path,
    requests_per_version: int = 600,
    clients: int = 6,
    progress: Callable[[str], None] = print,
    seed: int = 7,
) -> Path:
    """Serve each version in turn under traffic; return the store's path."""
    output = output.resolve()  # the app would take a relative store path from its instance folder
    output.mkdir(parents=True, exist_ok=True)
    database = output / "flamewatch.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    for version in VERSIONS:
        app = create_app(version, str(database))
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        plan = [(base, *_pick(rng)) for _ in range(requests_per_version)]
        try:
            with ThreadPoolExecutor(clients) as pool:
                statuses = list(pool.map(_fetch_job, plan))
        finally:
            server.shutdown()
            thread.join()
            server.server_close()
        app.extensions["flamewatch"].close()
        progress(
            f"version {version}: served {len(statuses)} requests"
            f" ({sum(s >= 400 for s in statuses)} answered with an error status)"
        )
    for line in why_it_changed(database):
        progress(line)
    return database


def why_it_changed(database: Path) -> list[str]:
    """What ``flamewatch changes`` says of the demo's store: a headline per finding and the
    call paths behind it (:mod:`.findings`)."""
    return [line for f in read_findings(str(database)) for line in describe(f)]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _pick(rng: random.Random) -> tuple[str, str, str]:
    weights = [w for w, _, _ in _TRAFFIC]
    _, method, path = rng.choices(_TRAFFIC, weights)[0]
    path = path.format(n=rng.randrange(400), q=rng.choice("abcdefghij"))
    return method, path, rng.choice(USERS)


def _fetch_job(job: tuple[str, str, str, str]) -> int:
    return _fetch(*job)


def _fetch(base: str, method: str, path: str, user: str) -> int:
    request = urllib.request.Request(base + path, method=method, headers={"X-User": user})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)
