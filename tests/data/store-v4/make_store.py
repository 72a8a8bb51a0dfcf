"""Make ``store.sqlite3``: a store of schema version 4 (before the coarser histograms of schema
5), written by flamewatch's real writer under real traffic. See README.md next to this file.

Run with a flamewatch whose schema is version 4 installed::

    python make_store.py OUTPUT.sqlite3
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flask import Flask, abort, request
from werkzeug.test import EnvironBuilder

from flamewatch.flask_plugin import Flamewatch
from flamewatch.sampler.store import SCHEMA_VERSION

GROUPS = ("alice", "bob", "carol")
PER_VERSION = 1000


def serve(database: Path, version: str, slow_ms: float) -> None:
    """``PER_VERSION`` requests to one version: three users, requests without a user (the
    client address stands for it) and without a client address (no group at all), GET and
    POST, 200, 404 and 500, and a slow path that makes outliers."""
    app = Flask("shop")
    app.config.update(PROPAGATE_EXCEPTIONS=False)

    @app.route("/items/<int:item_id>", methods=["GET", "POST"])
    def item(item_id: int) -> str:
        if item_id % 17 == 0:
            abort(404)
        if item_id % 29 == 0:
            raise RuntimeError("a broken item")
        return f"item {item_id}"

    @app.get("/search")
    def search() -> str:
        if request.args.get("slow"):
            time.sleep(slow_ms / 1000)
        return "hits"

    fw = Flamewatch(
        app,
        database=str(database),
        version=version,
        group_by=lambda req: req.headers.get("X-User"),
        sampler=False,
        outlier_warmup=10,
        profiles_per_hour=5,
    )
    client = app.test_client()
    for i in range(PER_VERSION):
        headers = {"X-User": GROUPS[i % 3]} if i % 5 else {}
        if i % 10 == 0:
            slow = "&slow=1" if i >= 100 and i % 50 == 0 else ""
            client.get(f"/search?q={i}{slow}", headers=headers)
        elif i % 7 == 0:  # no client address: neither a user nor an address to stand for one
            environ = EnvironBuilder(path=f"/items/{i}", method="POST").get_environ()
            environ.pop("REMOTE_ADDR", None)
            b"".join(app.wsgi_app(environ, lambda status, headers, exc_info=None: None))
        else:
            client.open(f"/items/{i}", method="POST" if i % 3 == 0 else "GET", headers=headers)
    assert fw.flush(timeout=60)
    fw.close()


def main() -> None:
    if SCHEMA_VERSION != 4:
        raise SystemExit(f"run this with a flamewatch of schema 4 (this one is {SCHEMA_VERSION})")
    database = Path(sys.argv[1])
    if database.exists():
        raise SystemExit(f"{database} exists")
    serve(database, "1.0", slow_ms=40)
    serve(database, "1.1", slow_ms=60)


if __name__ == "__main__":
    main()
