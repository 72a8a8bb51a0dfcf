"""Two histories for the findings, made by real traffic through real apps.

**A deploy history** (:func:`make_deploy_history`): six versions of one shop, eight endpoints,
ten users, one Flask app and one flamewatch agent per version on the same store, their requests
interleaved so the machine's load drifts alike for every version. Every view reaches the time
it spends through one shared helper, :func:`query` (as real views reach ``json.dumps`` or a
database driver), so a shared leaf's own time grows whenever any caller asks more of it. What
changes, and why:

- ``checkout`` is slower from ``v4`` for everyone: :func:`apply_coupons` queries 9 ms, not 2.
- ``search`` is faster from ``v3``: :func:`rank_results` queries 2 ms, not 10.
- ``orders`` is slower from ``v5`` for ``u4`` only (:func:`apply_discounts` queries 9 ms for
  them, not 2) -- and ``u4`` sends only 8 orders in ``v5`` (24 in ``v4`` and ``v6``, so that a
  loaded machine's noise does not hide the change from the test of one user against the rest).
- ``price`` is slower in ``v6``: :func:`load_price` takes 10 ms, not 3. Its view calls that one
  function and nothing else: its profile is a single chain of frames.
- ``index``, ``item``, ``feed`` and ``profile`` never change.

Users send very different numbers of requests: ``u0``-``u2`` twelve per endpoint and version,
the others twelve in one version out of three and two in the rest, so most users' previous version
with enough requests lies several versions back.

**A history inside one version** (:func:`make_growth_history`): a blog whose index lists every
post (as the Flask tutorial's does). After a while a bulk import adds 200 posts; the listing
gets slower without any deploy. ``about`` stays as it was. Changes inside a version are looked
for in hourly medians, and a test cannot wait a day: the history is a time-lapse -- each
:data:`GROWTH_BUCKET_S` of real traffic is stored as an hour (its requests' start times
stretched, then the histograms built again from them).

Both histories work on SQLite files and PostgreSQL URLs. The writer fills the histogram
tables as it writes; the time-lapse, which moves the rows in time afterwards, has the backfill
build them again (:func:`~flamewatch.sampler.store.backfill.rebuild_histograms`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from flask import Flask, request
from helpers import Database, watch_by_user

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.transfer import build_histograms
from flamewatch.sampler.store.backfill import rebuild_histograms
from flamewatch.sampler.store.connection import open_connection

__all__ = [
    "EXPECTED",
    "GROWTH_BUCKET_S",
    "PATHS",
    "USERS",
    "VERSIONS",
    "make_deploy_history",
    "make_growth_history",
]

VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6")
USERS = tuple(f"u{n}" for n in range(10))
#: (endpoint, version where it started, verdict, the one group it concerns or None)
EXPECTED = {
    ("checkout", "v4", "slower", None),
    ("search", "v3", "faster", None),
    ("orders", "v5", "slower", "u4"),
    ("price", "v6", "slower", None),
}
#: the call path of each finding, from the view down
PATHS = {
    "checkout": ["checkout", "apply_coupons", "query"],
    "search": ["search", "rank_results", "query"],
    "orders": ["orders", "apply_discounts", "query"],
    "price": ["price", "load_price"],
}
#: the seconds of real traffic the growth history stores as one hour
GROWTH_BUCKET_S = 0.5


def query(ms: float) -> None:
    """The helper every view's time goes through (a database call, a serialiser)."""
    time.sleep(ms / 1000)


def load_cart() -> None:
    query(2)


def apply_coupons(version: str) -> None:
    query(9 if version >= "v4" else 2)


def rank_results(version: str) -> None:
    query(2 if version >= "v3" else 10)


def apply_discounts(version: str, user: str) -> None:
    query(9 if version >= "v5" and user == "u4" else 2)


def load_price(version: str) -> None:
    time.sleep(0.010 if version >= "v6" else 0.003)


def render_feed() -> None:
    query(3)


def _shop(version: str, database: Database, instance: Path) -> Flask:
    app = Flask(f"shop-{version}", instance_path=str(instance))
    app.config.update(TESTING=True)

    @app.get("/")
    def index() -> str:
        query(2)
        return "home"

    @app.get("/item/<int:n>")
    def item(n: int) -> str:
        query(2)
        return str(n)

    @app.post("/checkout")
    def checkout() -> str:
        load_cart()
        apply_coupons(version)
        return "paid"

    @app.get("/search")
    def search() -> str:
        rank_results(version)
        return "results"

    @app.get("/orders")
    def orders() -> str:
        query(1)
        apply_discounts(version, request.headers["X-User"])
        return "orders"

    @app.get("/price")
    def price() -> str:
        load_price(version)
        return "9.99"

    @app.get("/feed")
    def feed() -> str:
        render_feed()
        return "feed"

    @app.get("/profile")
    def profile() -> str:
        query(1)
        return "me"

    watch_by_user(app, database, version)
    return app


_REQUESTS = {
    "index": ("GET", "/"),
    "item": ("GET", "/item/7"),
    "checkout": ("POST", "/checkout"),
    "search": ("GET", "/search"),
    "orders": ("GET", "/orders"),
    "price": ("GET", "/price"),
    "feed": ("GET", "/feed"),
    "profile": ("GET", "/profile"),
}


def requests_of(endpoint: str, version: str, user: str) -> int:
    """How many requests a user sends to an endpoint in a version (see the module's text)."""
    place = VERSIONS.index(version)
    if endpoint == "orders" and user == "u4":
        return {"v4": 24, "v5": 8, "v6": 24}.get(version, 12)
    number = USERS.index(user)
    if number < 3 or (number + place) % 3 == 0:
        return 12
    return 2


def make_deploy_history(database: Database, instance: Path, *, seed: int = 0) -> None:
    """Every request of the plan, shuffled; every agent closed (its requests, histograms and
    profiles written)."""
    apps = {version: _shop(version, database, instance) for version in VERSIONS}
    clients = {version: app.test_client() for version, app in apps.items()}
    for version in VERSIONS:  # each version's first request registers it: deployment order
        clients[version].get("/profile", headers={"X-User": USERS[0]})
        time.sleep(0.01)
    plan = [
        (version, endpoint, user)
        for version in VERSIONS
        for endpoint in _REQUESTS
        for user in USERS
        for _ in range(requests_of(endpoint, version, user))
    ]
    random.Random(seed).shuffle(plan)
    try:
        for version, endpoint, user in plan:
            method, path = _REQUESTS[endpoint]
            clients[version].open(path, method=method, headers={"X-User": user})
    finally:
        for app in apps.values():
            app.extensions["flamewatch"].close()


def _blog(database: Database, instance: Path) -> Flask:
    app = Flask("blog", instance_path=str(instance))
    app.config.update(TESTING=True)
    posts = [f"post {n}" for n in range(20)]

    def list_posts() -> list[str]:
        time.sleep(0.002 + 0.00005 * len(posts))  # the database reads every post
        return posts

    @app.get("/")
    def blog_index() -> str:
        return "\n".join(list_posts())

    @app.get("/about")
    def about() -> str:
        query(2)
        return "about"

    @app.post("/import")
    def bulk_import() -> str:
        posts.extend(f"imported {n}" for n in range(200))
        return "imported"

    Flamewatch(app, database=str(database), version="1.0", sample_interval_ms=1)
    return app


def make_growth_history(database: Database, instance: Path, *, seconds: float = 4.0) -> None:
    """``seconds`` of traffic to the blog, the bulk import, ``seconds`` more; stored as a
    time-lapse (each :data:`GROWTH_BUCKET_S` an hour), the histograms built again."""
    app = _blog(database, instance)
    client = app.test_client()
    try:
        for phase in range(2):
            if phase == 1:
                client.post("/import")
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                client.get("/")
                client.get("/about")
    finally:
        app.extensions["flamewatch"].close()
    _time_lapse(database, 3600 / GROWTH_BUCKET_S)


def _time_lapse(database: Database, factor: float) -> None:
    """Stretch the stored requests' start times by ``factor`` from the first one, and have the
    real backfill build the histograms again from the rows as they now are (the writer's
    hours were those of the real traffic)."""
    conn = open_connection(str(database), readonly=False)
    try:
        ((first,),) = conn.execute("SELECT min(started_at) FROM requests").fetchall()
        start = int(first // 3600) * 3600  # hours of the stretched times begin with the first
        with conn.transaction():
            conn.execute(
                "UPDATE requests SET started_at = ? + (started_at - ?) * ?",
                (start, first, factor),
            )
        rebuild_histograms(conn)
    finally:
        conn.close()
    build_histograms(str(database), quiet=True)
