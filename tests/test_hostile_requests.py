"""One hostile request must never stop monitoring: a fuzz suite over every channel a request
brings a string through, on SQLite and PostgreSQL.

Each example sends a few hostile values (huge, NUL, lone surrogates, control characters,
markup, SQL, terminal escapes, mixed scripts) through one channel -- the ``group_by`` value,
header values, query params, an outlier's JSON body, path segments, the method, upload file
names, the client address -- and then 1,000 ordinary requests: every one of those is stored,
and stored + dropped = served, always. Before the store made values storable, one such value
failed its batch forever and every later record of the process was lost, uncounted.
"""

from __future__ import annotations

import json
import logging
import operator
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from helpers import Database, rows
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.routing import Rule

from flamewatch.flask_plugin import Agent, Flamewatch
from flamewatch.sampler import storable as storable_module
from flamewatch.sampler.storable import DEFAULT_MAX_NAME_CHARS, storable
from flamewatch.sampler.store import sql
from flamewatch.sampler.store.sql import _bounded_update

ORDINARY = 1000
SLOW = "fuzz.slow"  # an environ key: the view sleeps, so the request is an outlier
GROUP = "fuzz.group"  # an environ key: what group_by returns

NASTY = (
    "\x00",
    "nul\x00inside",
    "\ud800",
    "lone \udfff low half",
    "\ud83d\ude00 two halves of one emoji",
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "'; DROP TABLE requests; -- \" OR 1=1",
    "\x1b[2J\x1b[31mred\x1b]0;title\x07\x1b[0m",
    "Ελληνικά العربية 中文 עברית 🙂 \u202eright-to-left\u200d\ufeff",
    "\r\n\t\x7f\x85\x0b",
    "",
    "%00%ud800\\x00\\u0000",
)


def _incompressible(seed: int, length: int) -> str:
    """A string no index can compress: PostgreSQL refused a 3,000-character one as a group."""
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x21, 0xD7FF)) for _ in range(length))


_CHARS = st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Lo", "Ll", "Mn", "So", "Zs"])
HOSTILE = st.one_of(
    st.sampled_from(NASTY),
    st.text(alphabet=_CHARS, max_size=40),
    st.builds(_incompressible, st.integers(0, 2**32), st.sampled_from([3000, 9000])),
    st.builds(operator.mul, st.sampled_from(NASTY[:4]), st.integers(1000, 50_000)),
)
VALUES = st.lists(HOSTILE, min_size=1, max_size=3)
#: the values the issue found: a 3,000-character X-User, a NUL, a lone surrogate
FOUND = [_incompressible(14, 3000), "team\x00a", "user\ud800"]

FUZZ = settings(
    max_examples=2,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


class Fuzzed:
    """An app with flamewatch on it, the requests its monitored views served, and checks."""

    def __init__(self, database: Database, instance: Path) -> None:
        self.served = 0
        app = Flask("hostile", instance_path=str(instance))
        app.config.update(TESTING=True)

        @app.get("/ok")
        def ok() -> str:
            self.served += 1
            return "ok"

        @app.route("/h/<path:rest>", methods=["GET", "POST"])
        def hostile(rest: str) -> str:
            self.served += 1
            request.get_json(silent=True)  # the app parses the body: the outlier's facts keep it
            if request.environ.get(SLOW):
                time.sleep(0.02)
            return "h"

        def any_method() -> str:
            self.served += 1
            if request.environ.get(SLOW):
                time.sleep(0.02)
            return "m"

        app.url_map.add(Rule("/m", endpoint="any_method"))  # no methods: every method matches
        app.view_functions["any_method"] = any_method
        self.fw = Flamewatch(
            app,
            database=str(database),
            version="fuzz",
            outlier_warmup=2,
            outlier_min_ms=0,
            profiles_per_hour=100_000,
            flush_interval=0.05,
            group_by=_group_of,
        )
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.database = database
        for _ in range(5):  # thresholds for the hostile views, so that slow requests are outliers
            self.client.get("/h/warm")
            self.client.get("/m")
        assert self.fw.flush(timeout=30)

    @property
    def agent(self) -> Agent:
        agent: Agent = self.app.extensions["flamewatch"]
        return agent

    def then_ordinary_requests_are_all_stored(self) -> None:
        """1,000 ordinary requests after the hostile ones: all stored; stored + dropped = served."""
        before = self._stored_ok()
        for _ in range(ORDINARY):
            assert self.client.get("/ok").text == "ok"
        assert self.fw.flush(timeout=60), "the store could not be written"
        assert self._stored_ok() == before + ORDINARY
        ((stored,),) = rows(self.database, "SELECT count(*) FROM requests")
        assert stored + self.agent.recorder.dropped == self.served

    def _stored_ok(self) -> int:
        ((count,),) = rows(
            self.database,
            "SELECT count(*) FROM requests r JOIN endpoints e ON e.id = r.endpoint_id"
            " WHERE e.name = 'ok'",
        )
        return int(count)

    def close(self) -> None:
        self.fw.close()


def _group_of(req: Any) -> Any:
    return req.environ.get(GROUP) or req.headers.get("X-User")  # the README's X-User


def _url_bytes(value: str) -> str:
    """``value`` percent-encoded as UTF-8 (a surrogate as the bytes it would have)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def fuzzed(
    store_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[Fuzzed]:
    with caplog.at_level(logging.WARNING, logger="flamewatch"):
        app = Fuzzed(store_db, tmp_path)
        try:
            yield app
        finally:
            app.close()
    # the values were made storable: the second wall (splitting a refused batch) never fired
    assert "refused by the store" not in caplog.text


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_group_by_values(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        assert fuzzed.client.get("/h/g", environ_overrides={GROUP: value, SLOW: 1}).text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_header_values(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        headers = {"HTTP_X_USER": value, "HTTP_USER_AGENT": value, "HTTP_X_REQUEST_ID": value}
        response = fuzzed.client.get("/h/hd", environ_overrides={**headers, SLOW: 1})
        assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_query_params(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        query = f"q={_url_bytes(value)}&{_url_bytes(value)}=1"
        response = fuzzed.client.get("/h/q", query_string=query, environ_overrides={SLOW: 1})
        assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_json_bodies_of_outliers(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        body = json.dumps({"v": value, value: [value, {"deep": value}], "n": 2**70})
        response = fuzzed.client.post(
            "/h/j", data=body, content_type="application/json", environ_overrides={SLOW: 1}
        )
        assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_path_segments(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        response = fuzzed.client.get(f"/h/x{_url_bytes(value)}", environ_overrides={SLOW: 1})
        # werkzeug's path converter matches no newline: Flask alone answers such a path 404
        assert (response.status_code, response.text) == (
            (404, response.text) if "\n" in value else (200, "h")
        )
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_methods(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        method = value.upper()
        if method in {"HEAD", ""}:
            continue  # a real method, or none: not hostile
        response = fuzzed.client.get("/m", environ_overrides={"REQUEST_METHOD": value, SLOW: 1})
        assert response.text == "m"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_file_names_of_uploads(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        name = value.encode("utf-8", "surrogatepass").replace(b'"', b"'").replace(b"\r\n", b" ")
        body = (
            b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="' + name + b'"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\ndata\r\n--xyz--\r\n"
        )
        response = fuzzed.client.post(
            "/h/u",
            data=body,
            content_type="multipart/form-data; boundary=xyz",
            environ_overrides={SLOW: 1},
        )
        assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


@FUZZ
@given(values=VALUES)
@example(values=FOUND)
def test_client_addresses(fuzzed: Fuzzed, values: list[str]) -> None:
    for value in values:
        response = fuzzed.client.get("/h/a", environ_overrides={"REMOTE_ADDR": value, SLOW: 1})
        assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()


# -- channels fixed at start: endpoint names, rules and the version label ---------------------


def test_hostile_endpoint_names_and_version_label_are_stored(
    store_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("hostile_names", instance_path=str(tmp_path))
    served = [0]

    def view(**_: object) -> str:
        served[0] += 1
        return "v"

    names = [value for value in (*NASTY, *FOUND, "e" * 100_000) if value and "." not in value]
    for i, name in enumerate(names):
        app.add_url_rule(f"/e{i}/<path:{_identifier(i)}>", endpoint=name, view_func=view)
    version = "v\x00\ud800" + _incompressible(2, 5000)
    fw = Flamewatch(app, database=str(store_db), version=version, flush_interval=0.05)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="flamewatch"):
        for i in range(len(names)):
            assert client.get(f"/e{i}/x").text == "v"
        assert fw.flush(timeout=30)
        for _ in range(ORDINARY):
            assert client.get("/e0/y").text == "v"
        assert fw.flush(timeout=30)
    assert "refused by the store" not in caplog.text
    ((stored,),) = rows(store_db, "SELECT count(*) FROM requests")
    assert stored == served[0] == len(names) + ORDINARY
    stored_names = {name for (name,) in rows(store_db, "SELECT name FROM endpoints")}
    assert {storable(name, DEFAULT_MAX_NAME_CHARS) for name in names} <= stored_names
    ((label,),) = rows(store_db, "SELECT name FROM versions")
    assert label == storable(version, DEFAULT_MAX_NAME_CHARS)
    assert label.startswith("v\ufffd\ufffd")
    assert label.endswith(" chars]")
    fw.close()


def _identifier(i: int) -> str:
    return f"rest{i}"


# -- what is kept is bounded -----------------------------------------------------------------


def test_a_huge_group_is_cut_to_the_cap_everywhere_it_is_stored(
    store_db: Database, tmp_path: Path
) -> None:
    fuzzed = Fuzzed(store_db, tmp_path)
    group = "g" * 1_000_000
    assert fuzzed.client.get("/h/big", environ_overrides={GROUP: group, SLOW: 1}).text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()
    fuzzed.close()
    expected = storable(group, DEFAULT_MAX_NAME_CHARS)
    assert len(expected) <= DEFAULT_MAX_NAME_CHARS
    assert expected.startswith("ggg")
    assert expected.endswith(" chars]")
    groups = {name for (name,) in rows(store_db, "SELECT name FROM user_groups")}
    assert expected in groups
    assert max(len(name) for name in groups) <= DEFAULT_MAX_NAME_CHARS
    facts = [orjson.loads(text) for (text,) in rows(store_db, "SELECT request_json FROM outliers")]
    assert any(f["group"] == expected for f in facts)  # not the megabyte in every outlier row


def test_a_2mb_json_post_ending_in_a_lone_surrogate_keeps_capped_facts(
    store_db: Database, tmp_path: Path
) -> None:
    fuzzed = Fuzzed(store_db, tmp_path)
    items = [f"item {i} " + "x" * 2000 for i in range(1000)]
    body = json.dumps({"items": items, "last": "\ud800"})
    assert len(body) > 2_000_000
    response = fuzzed.client.post(
        "/h/big", data=body, content_type="application/json", environ_overrides={SLOW: 1}
    )
    assert response.text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()
    fuzzed.close()
    texts = [text for (text,) in rows(store_db, "SELECT request_json FROM outliers")]
    big = [orjson.loads(text) for text in texts if "over the 64 KiB limit" in text]
    assert big, "the 2 MB body's facts were not capped with a note"
    assert all(len(text.encode()) <= 64 * 1024 for text in texts)
    assert big[0]["path"] == "/h/big"  # the rest of the facts is kept


def test_the_group_id_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "_MAX_CACHED_NAMES", 100)
    fuzzed = Fuzzed(tmp_path / "store.sqlite3", tmp_path)
    for i in range(300):
        group = f"{i}-" + "u" * 8000
        assert fuzzed.client.get("/h/c", environ_overrides={GROUP: group}).text == "h"
    fuzzed.then_ordinary_requests_are_all_stored()
    writer = fuzzed.agent._writer
    assert writer is not None
    cache = writer.store._group_ids  # type: ignore[attr-defined]
    assert 0 < len(cache) <= 100
    assert max(len(key) for key in cache) <= DEFAULT_MAX_NAME_CHARS
    fuzzed.close()
    ((groups,),) = rows(tmp_path / "store.sqlite3", "SELECT count(*) FROM user_groups")
    assert groups >= 300  # every distinct group stored, each cut to the cap


def test_a_batch_of_more_names_than_the_cap_leaves_the_cache_full_not_empty() -> None:
    # a writer that drains a burst finds more new names in one batch than the cache may hold;
    # the next batch, with none, must not empty it (it did, under load, in CI)
    cache: dict[str, int] = {}
    _bounded_update(cache, {f"g{i}": i for i in range(150)}, 100)
    assert list(cache) == [f"g{i}" for i in range(50, 150)]
    _bounded_update(cache, {}, 100)
    assert len(cache) == 100
    _bounded_update(cache, {"new": 1}, 100)
    assert cache == {"new": 1}


# -- the helpers themselves --------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(alphabet=_CHARS), limit=st.integers(32, 600))
def test_storable_is_valid_utf8_without_nul_within_the_cap_and_idempotent(
    text: str, limit: int
) -> None:
    for value in (text, text * 50):
        made = storable(value, limit)
        made.encode("utf-8")  # no surrogate left
        assert "\x00" not in made
        assert len(made) <= limit
        assert storable(made, limit) == made
        if len(value) <= limit and value.isascii() and "\x00" not in value:
            assert made is value  # the common case is returned untouched
        if len(value) > limit:
            assert made.endswith(" chars]")


def test_the_truncation_mark_counts_what_was_left_out() -> None:
    made = storable("a" * 1000, 100)
    head, mark = made.split("…", 1)
    assert mark == f"[+{1000 - len(head)} chars]"
    assert 95 <= len(made) <= 100
    assert storable_module.truncation_mark(5) == "…[+5 chars]"
