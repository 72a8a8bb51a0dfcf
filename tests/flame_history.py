"""A synthetic history for the aggregated profiles, made by real traffic through real apps.

Three versions of one small service run side by side (one Flask app and one flamewatch agent
per version, on the same store), and their requests are interleaved, so the machine's load
drifts alike for every version. What changes, and why:

- ``feed`` is slower in ``v2``: :func:`render_feed` takes 14 ms instead of 4.
- ``orders`` is slower in ``v3`` for ``carol`` only: :func:`apply_discounts` takes 14 ms for her.
- ``search`` is faster in ``v3``: :func:`rank_results` takes 2 ms instead of 12.
- ``index`` and ``item`` never change.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from flask import Flask, request
from helpers import watch_by_user

__all__ = ["EXPECTED", "USERS", "make_flame_history"]

USERS = ("alice", "bob", "carol", "dave")
VERSIONS = ("v1", "v2", "v3")
#: (endpoint, version, verdict, the one group it concerns or None) -> the function to blame
EXPECTED = {
    ("feed", "v2", "slower", None): "render_feed",
    ("orders", "v3", "slower", "carol"): "apply_discounts",
    ("search", "v3", "faster", None): "rank_results",
}


def render_feed(version: str) -> None:
    time.sleep(0.014 if version >= "v2" else 0.004)


def apply_discounts(version: str, user: str) -> None:
    time.sleep(0.014 if version >= "v3" and user == "carol" else 0.003)


def rank_results(version: str) -> None:
    time.sleep(0.002 if version >= "v3" else 0.012)


def load_page() -> None:
    time.sleep(0.004)


def make_app(version: str, database: Path, instance: Path) -> Flask:
    app = Flask(f"history-{version}", instance_path=str(instance))
    app.config.update(TESTING=True)

    @app.get("/")
    def index() -> str:
        load_page()
        return "home"

    @app.get("/item/<int:n>")
    def item(n: int) -> str:
        load_page()
        return str(n)

    @app.get("/feed")
    def feed() -> str:
        load_page()
        render_feed(version)
        return "feed"

    @app.get("/orders")
    def orders() -> str:
        load_page()
        apply_discounts(version, request.headers["X-User"])
        return "orders"

    @app.get("/search")
    def search() -> str:
        load_page()
        rank_results(version)
        return "results"

    watch_by_user(app, database, version)
    return app


def make_flame_history(database: Path, instance: Path, *, rounds: int = 14, seed: int = 0) -> None:
    """``rounds`` times, each user requests each endpoint once in each version, shuffled;
    every agent is closed (its profiles written) before returning."""
    apps = [make_app(version, database, instance) for version in VERSIONS]
    clients = [app.test_client() for app in apps]
    for client in clients:  # each version's first request registers it: deployment order
        client.get("/", headers={"X-User": USERS[0]})
        time.sleep(0.01)
    rng = random.Random(seed)
    paths = ["/", "/item/7", "/feed", "/orders", "/search"]
    plan = [(c, p, u) for c in clients for p in paths for u in USERS] * rounds
    rng.shuffle(plan)
    try:
        for client, path, user in plan:
            client.get(path, headers={"X-User": user})
    finally:
        for app in apps:
            app.extensions["flamewatch"].close()
