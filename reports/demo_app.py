"""A small Flask service for the demo: three versions, several users, a few slow requests.

Version ``1.1.0`` makes ``search`` slower (it scores every item twice); version ``1.2.0`` makes
``list_items`` faster (it caches the catalogue). About one request in sixty runs into
``rebuild_search_index``, which takes 60-120 ms: the outliers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from flask import Flask, Response, abort, jsonify, request, stream_with_context

from flamewatch.flask_plugin import Flamewatch

__all__ = ["USERS", "create_app"]

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
_CATALOGUE = [{"id": i, "name": f"item {i}", "price": (i * 37) % 100} for i in range(400)]


def busy(ms: float) -> None:
    """Burn CPU for about ``ms`` milliseconds."""
    end = time.perf_counter() + ms / 1000
    total = 0
    while time.perf_counter() < end:
        total += sum(range(200))


def rebuild_search_index() -> None:
    """The rare slow path: what the outliers' profiles should point at."""
    time.sleep(random.uniform(0.06, 0.12))


def score(item: dict[str, object], query: str) -> float:
    busy(0.004)
    return float(str(item["name"]).count(query))


def create_app(version: str, database: str) -> Flask:
    app = Flask(__name__)
    app.config.update(FLAMEWATCH_DATABASE=database, FLAMEWATCH_VERSION=version)
    major, minor = (int(part) for part in version.split(".")[:2])

    @app.get("/")
    def index() -> str:
        busy(0.5)
        return "flamewatch demo shop"

    @app.get("/api/items")
    def list_items() -> Response:
        busy(1.0 if (major, minor) >= (1, 2) else 4.0)
        return jsonify(_CATALOGUE[:50])

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Response:
        if item_id >= len(_CATALOGUE):
            abort(404)
        busy(0.8)
        return jsonify(_CATALOGUE[item_id])

    @app.get("/api/search")
    def search() -> Response:
        query = request.args.get("q", "")
        if random.random() < 1 / 60:
            rebuild_search_index()
        passes = 2 if (major, minor) >= (1, 1) else 1
        hits = []
        for _ in range(passes):
            hits = [item for item in _CATALOGUE if score(item, query) > 0]
        return jsonify(hits[:20])

    @app.post("/api/cart")
    def add_to_cart() -> tuple[Response, int]:
        busy(1.5)
        return jsonify(ok=True), 201

    @app.get("/export.csv")
    def export() -> Response:
        def rows() -> Iterator[str]:
            yield "id,name,price\n"
            for item in _CATALOGUE[:100]:
                busy(0.02)
                yield f"{item['id']},{item['name']},{item['price']}\n"

        return Response(stream_with_context(rows()), mimetype="text/csv")

    Flamewatch(app, group_by=lambda req: req.headers.get("X-User"))
    return app
