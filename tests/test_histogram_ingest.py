"""The writer folds every request into the latency histograms as it writes it, on both
backends: the stored histograms are what the stored rows make, and the groups of an endpoint
and version beyond ``FLAMEWATCH_HISTOGRAM_GROUPS`` are counted together as "others" (-1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from flask import Flask
from helpers import Database, flush, rows
from histogram_check import assert_histograms_match_rows


def _traffic(app: Flask, users: int, per_user: int) -> None:
    client = app.test_client()
    for i in range(users * per_user):
        client.get(f"/items/{i}", headers={"X-User": f"user{i % users}"})
        if i % 4 == 0:
            client.get("/")  # no user
    flush(app)


def _by_header(request: object) -> str | None:
    return request.headers.get("X-User")  # type: ignore[attr-defined,no-any-return]


def test_the_writer_folds_what_it_writes(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    app = make_app(database=str(store_db), group_by=_by_header)
    _traffic(app, users=3, per_user=20)
    found = assert_histograms_match_rows(store_db)
    assert sum(found.latency.values()) == 60 + 15
    assert {g for (_, _, g, _) in found.latency if g > 0} == {
        gid for (gid,) in rows(store_db, "SELECT id FROM user_groups")
    }


def test_groups_beyond_the_cap_are_counted_as_others(
    store_db: Database, make_app: Callable[..., Flask]
) -> None:
    app = make_app(database=str(store_db), group_by=_by_header, histogram_groups=2)
    _traffic(app, users=5, per_user=6)
    found = assert_histograms_match_rows(store_db, capped=True)
    ((item,),) = rows(store_db, "SELECT id FROM endpoints WHERE name = 'item'")
    items: Counter[int] = Counter()
    for (e, _, g, _), n in found.latency.items():
        if e == item:
            items[g] += n
    admitted = {g for g in items if g > 0}
    assert len(admitted) == 2  # the first two users seen, each with its own 6 requests
    assert all(items[g] == 6 for g in admitted)
    assert items[-1] == 3 * 6  # the three later users, together
    assert sum(items.values()) == 30
