"""A small Flask service for the demo: three versions, several users, a few slow requests.

Version ``1.1.0`` makes ``search`` slower: its ``rank_hits`` compares the hits far more
thoroughly. Version ``1.2.0`` makes ``list_items`` faster (``load_catalogue`` is cached), and
``get_item`` slower for ``erin`` only: ``load_price`` looks up her many coupons. About one
request in sixty runs into ``rebuild_search_index``, which takes 60-120 ms: the outliers. The
report's versions page names ``rank_hits``, ``load_catalogue`` and ``load_price`` as the
functions behind the three changes, and says the last one concerns ``erin`` only.
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


def rank_hits(hits: list[dict[str, object]], thorough: bool) -> list[dict[str, object]]:
    """Orders search hits; 1.1.0 made it compare them far more thoroughly (its own loop)."""
    end = time.perf_counter() + (0.008 if thorough else 0.001)
    comparisons = 0
    while time.perf_counter() < end:
        comparisons += 1
    return sorted(hits, key=lambda item: str(item["name"]))


def load_price(item: dict[str, object], user: str, coupons: bool) -> object:
    """An item's price for a user; from 1.2.0 it looks up the user's coupons (a query that
    waits), and erin has many."""
    time.sleep(0.02 if coupons and user == "erin" else 0.0005)
    return item["price"]


def load_catalogue(cached: bool) -> list[dict[str, object]]:
    """The catalogue from the database (a query that waits); 1.2.0 asks a cache first, which
    answers much sooner."""
    time.sleep(0.0008 if cached else 0.006)
    return _CATALOGUE


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
        busy(1.0)
        return jsonify(load_catalogue(cached=(major, minor) >= (1, 2))[:50])

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Response:
        if item_id >= len(_CATALOGUE):
            abort(404)
        busy(0.8)
        item = dict(_CATALOGUE[item_id])
        item["price"] = load_price(
            item, request.headers.get("X-User", ""), (major, minor) >= (1, 2)
        )
        return jsonify(item)

    @app.get("/api/search")
    def search() -> Response:
        query = request.args.get("q", "")
        if random.random() < 1 / 60:
            rebuild_search_index()
        hits = [item for item in _CATALOGUE if score(item, query) > 0]
        return jsonify(rank_hits(hits, thorough=(major, minor) >= (1, 1))[:20])

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

    # a short run: sampling every 2 ms (not 10) gathers enough samples of its fast endpoints
    # for the aggregated profiles to explain their changes
    Flamewatch(app, group_by=lambda req: req.headers.get("X-User"), sample_interval_ms=2)
    return app
