"""The redaction corpus: secret keys, secret-shaped values and path forms, end to end.

Every secret below is sent to a real app in real outlier requests (query, form, JSON body,
headers, path); then the store's bytes (the SQLite file, or every PostgreSQL row, with each
profile decompressed), every file of the report site and every profile export are searched for
it. Ordinary values sent alongside must come back readable.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from helpers import flush, is_pg, rows, warm

from flamewatch.flask_plugin import Flamewatch
from flamewatch.reports.export import FORMATS, export_profile
from flamewatch.reports.outliers import list_outliers, load_outlier, load_session
from flamewatch.reports.site import write_site
from flamewatch.sampler.redact import NEVER_STORED_HEADERS, Redactor

#: keys that must be redacted: the issue's misses, common spellings of each default, framework
#: session and CSRF cookies, payment and identity numbers
SECRET_KEYS = [
    # the keys the issue found stored in clear
    *("passphrase", "pass", "pw", "pin", "otp", "code", "sid", "PHPSESSID", "jwt", "bearer"),
    *("key", "sig", "hmac", "account_number", "social_security_number"),
    # passwords
    *("password", "Password", "PASSWORD", "user.password", "user[password]", "passwd", "pwd"),
    *("new_password", "newPassword", "password_confirmation", "old-password", "db_pass"),
    *("user_pass", "passPhrase", "pass_phrase", "passcode", "PassCode", "new_pw", "pw_hash"),
    *("one_time_password", "admin-pass", "smtp_password", "passkey"),
    # secrets, tokens, keys
    *("secret", "client_secret", "clientSecret", "X-Secret", "secret_key", "SECRET_KEY"),
    *("token", "access_token", "accessToken", "refresh_token", "refreshToken", "id_token"),
    *("auth_token", "authToken", "X-Auth-Token", "X-Access-Token", "api_token", "apiToken"),
    *("oauth_token", "oauth_token_secret", "reset_token", "resetToken", "invite_token"),
    *("verify_token", "X-CSRF-Token", "X-XSRF-TOKEN", "csrf", "csrf_token", "_csrf"),
    *("csrfmiddlewaretoken", "authenticity_token", "xsrf", "__RequestVerificationToken"),
    *("apikey", "api_key", "api-key", "API Key", "apiKey", "Api-Key", "X-Api-Key", "x-apikey"),
    *("accesskey", "access_key", "aws_access_key_id", "aws_secret_access_key", "AccessKeyId"),
    *("privatekey", "private_key", "privkey", "app_key", "appKey", "client_key", "master_key"),
    *("signing_key", "encryption_key", "license_key", "consumer_key", "auth_key", "x-key"),
    *("webhook_key", "publishable-key", "jwt_token", "id_jwt", "bearer_token", "authorization"),
    *("Authorization", "X-Forwarded-Authorization", "proxy_authorization", "auth", "AUTH"),
    *("x-auth", "auth_header", "basic_auth", "basicAuth", "X-Auth-User", "OAuth", "auth_code"),
    *("authCode", "authorization_code", "credential", "credentials", "aws_credentials"),
    *("signature", "X-Hub-Signature", "X-Hub-Signature-256", "x-amz-signature", "sig_v4"),
    *("request_sig", "hmac_sha256", "X-Shopify-Hmac-Sha256", "mnemonic", "seed_phrase"),
    *("dsn", "sentry_dsn", "database_dsn", "connection_string", "connectionString"),
    *("SAMLResponse", "SAMLRequest"),
    # one-time codes
    *("otp_code", "totp", "hotp", "totp_code", "verification_code", "security_code"),
    *("confirmation_code", "recovery_code", "backup_codes", "activation_code", "reset_code"),
    *("mfa_code", "sms_code", "pin_code", "userPin", "card_pin"),
    # sessions and cookies
    *("cookie", "session_cookie", "session", "sessionid", "session_id", "sessionId", "sess"),
    *("JSESSIONID", "jsessionid", "ASP.NET_SessionId", ".AspNetCore.Session", ".ASPXAUTH"),
    *(".AspNetCore.Antiforgery.x1", "connect.sid", "laravel_session", "XSRF-TOKEN"),
    *("remember_web_59ba36addc2b2f94", "remember_token", "remember_user_token", "rack.session"),
    *("_gitlab_session", "_myapp_session", "ci_session", "CAKEPHP", "express:sess", "koa.sess"),
    *("wordpress_logged_in_abc123", "wordpress_sec_abc123", "wp-postpass_abc123", "csrftoken"),
    *("__Host-next-auth.session-token", "next-auth.csrf-token", "sb-access-token", "CFID"),
    *("CFTOKEN", "user_sid", "sessid", "x-session-key"),
    # payment and identity numbers
    *("creditcard", "credit_card", "cardnumber", "card_number", "ccnumber", "cc-number"),
    *("cvv", "cvc", "card_cvc", "cvv2", "iban", "bank_iban", "accountNumber"),
    *("acct_number", "routing_number", "bank_account", "ssn", "user_ssn", "userSSN"),
    *("social_security", "passport_number", "national_id", "tax_id"),
]
#: ordinary keys that must stay readable
ORDINARY_KEYS = [
    *("author", "author_name", "authority", "oauth_state", "keyboard", "description", "monkey"),
    *("class_name", "business_number", "usersSnapshot", "username", "q", "page", "sort"),
    *("zip_code", "country_code", "status_code", "postal_code", "currency_code", "keyCode"),
    *("sort_key", "primary_key", "cache_key", "passport", "compass", "bypass", "spin"),
    *("spinner", "sidebar", "side", "inside", "keyword", "keywords", "signal", "signup"),
    *("design", "coder", "codename", "pinned", "option", "topic", "passenger", "email"),
    *("item_id", "order_id", "user_id", "name", "title", "next", "redirect", "callback"),
]
#: (what it is, the value, the parts of it that must not be stored); under innocent keys
SECRET_VALUES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjb3JwdXNKV1QifQ.Q29ycHVzU2lnbmF0dXJl",
        ("eyJzdWIiOiJjb3JwdXNKV1QifQ", "Q29ycHVzU2lnbmF0dXJl"),
    ),
    ("aws-akia", "key AKIAIOSFODNN7CORPUS1 in the note", ("AKIAIOSFODNN7CORPUS1",)),
    ("aws-asia", "ASIAY34FZKBOKMUCORPS", ("ASIAY34FZKBOKMUCORPS",)),
    ("github-ghp", "ghp_CorpusGithubToken0123456789abcdefAB", ("CorpusGithubToken0123456789",)),
    ("github-gho", "gho_CorpusOauthToken0123456789abcdefABC", ("CorpusOauthToken0123456789",)),
    ("github-pat", "github_pat_11CORPUS0123_FineGrainedTokenZz9", ("FineGrainedTokenZz9",)),
    ("slack", "xoxb-1234567890-CorpusSlackBot9", ("CorpusSlackBot9",)),
    ("stripe", "sk_live_CorpusStripe0123456789", ("CorpusStripe0123456789",)),
    ("google", "AIzaSyCorpusGoogleKey0123456789abcdefgh", ("CorpusGoogleKey0123456789",)),
    ("openai", "sk-proj-CorpusOpenAiKey0123456789", ("CorpusOpenAiKey0123456789",)),
    ("bearer", "Bearer CorpusBearerOpaque42", ("CorpusBearerOpaque42",)),
    (
        "url-access-token",
        "https://api.example.com/callback?access_token=CorpusUrlToken42&page=2",
        ("CorpusUrlToken42",),
    ),
    (
        "url-fragment-token",
        "https://app.example.com/#access_token=CorpusFragToken42&state=x",
        ("CorpusFragToken42",),
    ),
    (
        "url-nested-encoded",
        "https://example.com/login?next=%2Freset%3Ftoken%3DCorpusNestedTok42%26a%3Db",
        ("CorpusNestedTok42",),
    ),
    ("url-password", "https://deploy:CorpusUrlPass42@git.example.com/repo", ("CorpusUrlPass42",)),
    ("dsn-postgres", "postgresql://app:CorpusDsnPass42@db:5432/shop", ("CorpusDsnPass42",)),
    ("dsn-redis", "redis://:CorpusRedisPass42@cache:6379/0", ("CorpusRedisPass42",)),
    (
        "dsn-libpq",
        "host=db user=app password=CorpusLibpqPass42 dbname=shop",
        ("CorpusLibpqPass42",),
    ),
    ("dsn-ado", "Server=db;User Id=app;Password=CorpusAdoPass42;", ("CorpusAdoPass42",)),
    ("cookie-string", "theme=dark; sessionid=CorpusCookieSess42", ("CorpusCookieSess42",)),
    ("json-in-string", '{"user": "ann", "api_key": "CorpusJsonInStr42"}', ("CorpusJsonInStr42",)),
    (
        "pem",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpQIBAAKCAQEACorpusPemBody42\n"
        "-----END RSA PRIVATE KEY-----",
        ("CorpusPemBody42",),
    ),
    ("card", "paid with 4111 1111 1111 1111 today", ("4111 1111 1111 1111",)),
]
#: ordinary values, under ordinary keys, that must be stored exactly as sent
ORDINARY_VALUES = {
    "page": "2",
    "sort": "price",
    "q": "blue shoes size 42",
    "next": "https://example.com/items/42?page=2&sort=price",
    "item_id": "550e8400-e29b-41d4-a716-446655440000",
    "title": "how-to-deploy-flask-2024",
    "date": "2024-01-15",
    "amount": "1299.50",
    "order_no": "1234567812345678",
    "email": "ann@example.com",
    "note": "token expired, please sign in again",
}
RANDOM_SEGMENT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
PATH_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJwYXRoIjoiY29ycHVzIn0.UGF0aFNpZ25hdHVyZQ"
#: (path sent, the parts that must not be stored)
SECRET_PATHS: list[tuple[str, tuple[str, ...]]] = [
    ("/reset/CorpusResetWord", ("CorpusResetWord",)),
    ("/api/CorpusApiKeyWord/orders", ("CorpusApiKeyWord",)),
    ("/confirm/CorpusConfirmWord", ("CorpusConfirmWord",)),
    ("/unlock/73925184", ("73925184",)),
    (f"/files/docs/{RANDOM_SEGMENT}/readme.txt", (RANDOM_SEGMENT,)),
    (f"/s/{PATH_JWT}", ("eyJwYXRoIjoiY29ycHVzIn0", "UGF0aFNpZ25hdHVyZQ")),
    (f"/docs/{RANDOM_SEGMENT}", (RANDOM_SEGMENT,)),
]
#: (path sent, path stored)
ORDINARY_PATHS = [
    ("/stock/42", "/stock/42"),
    ("/docs/how-to-deploy-flask-2024", "/docs/how-to-deploy-flask-2024"),
    ("/orders/550e8400-e29b-41d4-a716-446655440000", None),
    ("/objects/c9bf9e57-1685-4c89-bafb-ff5af830be8a", None),
    ("/files/docs/2024/report_2024_Q3.pdf", None),
]
REFERER_SECRET = "CorpusRefererTok42"
REFERER_RESET = "Zk3xQ9mP2vL8nR4tW7yB1cD6fH0jS5aE"  # token_urlsafe-like, in a Referer's path
SLOW_S = 0.25
USER_KEY_SECRET = "CorpusUserKeySecret42"
#: the corpus keys that can be header names (an HTTP token: no spaces, brackets or colons), with
#: dashes for underscores, as a WSGI server hands them over
HEADER_KEYS = {
    key.replace("_", "-"): key
    for key in SECRET_KEYS
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key)
}


def test_corpus_is_the_size_the_issue_asks_for() -> None:
    assert len(set(SECRET_KEYS)) == len(SECRET_KEYS), "a key is listed twice"
    assert len(SECRET_KEYS) >= 178


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_corpus_key_is_secret(key: str) -> None:
    assert Redactor().is_secret_key(key)


@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_every_ordinary_key_is_not_secret(key: str) -> None:
    assert not Redactor().is_secret_key(key)


@pytest.mark.parametrize(
    ("name", "value", "needles"), SECRET_VALUES, ids=[v[0] for v in SECRET_VALUES]
)
def test_every_secret_shape_is_redacted_under_an_innocent_key(
    name: str, value: str, needles: tuple[str, ...]
) -> None:
    out = Redactor().text(value)
    assert "[redacted" in out, name
    for needle in needles:
        assert needle not in out, name


@pytest.mark.parametrize(("key", "value"), ORDINARY_VALUES.items())
def test_ordinary_values_stay_readable(key: str, value: str) -> None:
    assert Redactor().mapping([(key, value)]) == {key: value}


# -- end to end: the store, the site, the exports -------------------------------------------


@pytest.fixture
def db_path(store_db: Path | str) -> Path | str:
    """The store of the end-to-end test: a SQLite file, then a PostgreSQL database."""
    return store_db


def _slow() -> None:
    if request.args.get("slow"):
        time.sleep(SLOW_S)


def _corpus_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app(
        init=False,
        outlier_warmup=10,
        # a fixed threshold: the slow requests cannot lift it (nor a stalled fast one cross it)
        outlier_k=0,
        outlier_factor=1,
        outlier_min_ms=SLOW_S * 1000 / 2.5,
        profiles_per_hour=1000,
        redact="tenant_ref, internal-id",  # the user's keys, on top of the defaults
        capture_headers=["Referer", "Origin", "User-Agent", "X-Note", *HEADER_KEYS],
    )

    def view(**_: Any) -> str:
        _slow()
        return "ok"

    for rule in (
        "/pay",
        "/reset/<token>",
        "/api/<key>/orders",
        "/confirm/<reset_token>",
        "/unlock/<int:pin>",
        "/stock/<int:item_id>",
        "/files/<path:name>",
        "/s/<slug>",
        "/docs/<slug>",
        "/orders/<uuid:order_id>",
        "/objects/<object_id>",
    ):
        app.add_url_rule(rule, endpoint=rule, view_func=view, methods=["GET", "POST"])
    Flamewatch(app)
    return app


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_secret(index: int) -> str:
    return f"CorpusKeySecret{index:03d}Zq"


def _send_corpus(app: Flask) -> int:
    """Every secret and ordinary value in slow requests; returns how many were sent."""
    client = app.test_client()
    keyed = [(key, _key_secret(index)) for index, key in enumerate(SECRET_KEYS)]
    shaped = [(f"note_{name}", value) for name, value, _ in SECRET_VALUES]
    ordinary = list(ORDINARY_VALUES.items())
    sent = 0
    for chunk in _chunks(keyed, 150):  # under the 200 items a dict keeps
        client.get("/pay", query_string=[("slow", "1"), *chunk, *ordinary])
        client.post("/pay?slow=1", data=dict([*chunk, *ordinary]))
        client.post("/pay?slow=1", json={"order": {"lines": [dict([*chunk, *ordinary])]}})
        sent += 3
    user_keyed = [("tenant_ref", USER_KEY_SECRET), ("InternalId", USER_KEY_SECRET)]
    client.get("/pay", query_string=[("slow", "1"), *shaped, *user_keyed])
    client.post("/pay?slow=1", data=dict(shaped))
    client.post("/pay?slow=1", json={"meta": [dict(shaped)]})
    sent += 3
    values = dict(keyed)
    headers = [(name, values[key]) for name, key in HEADER_KEYS.items()]
    client.get("/pay?slow=1", headers=headers)
    sent += 1
    for _, value, _ in SECRET_VALUES:
        if "\n" in value:
            continue  # a header value cannot hold a newline
        client.get("/pay?slow=1", headers={"X-Note": value})
        sent += 1
    client.get(
        "/pay?slow=1",
        headers={
            "Referer": f"https://shop.example/reset/{REFERER_RESET}?token={REFERER_SECRET}&page=3",
            "Origin": f"https://shop.example?token={REFERER_SECRET}",
            "User-Agent": "corpus-agent/1.0",
        },
    )
    sent += 1
    for path, _ in [*SECRET_PATHS, *ORDINARY_PATHS]:
        client.get(f"{path}?slow=1")
        sent += 1
    return sent


def _store_bytes(db_path: Path | str, tmp_path: Path) -> bytes:
    """The store's files (or every PostgreSQL row as text), and every profile decompressed."""
    if is_pg(db_path):
        tables = [
            name
            for (name,) in rows(
                db_path, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        stored = "".join(
            str(tuple(row)) for table in tables for row in rows(db_path, f"SELECT * FROM {table}")
        ).encode()
    else:
        assert isinstance(db_path, Path)
        stored = b"".join(p.read_bytes() for p in tmp_path.glob(db_path.name + "*"))
    profiles = rows(db_path, "SELECT profile FROM outliers WHERE profile IS NOT NULL")
    return stored + b"".join(gzip.decompress(bytes(row[0])) for row in profiles)


def _needles() -> list[str]:
    found = [_key_secret(index) for index in range(len(SECRET_KEYS))]
    found += [needle for _, _, needles in SECRET_VALUES for needle in needles]
    found += [needle for _, needles in SECRET_PATHS for needle in needles]
    return [*found, REFERER_SECRET, REFERER_RESET, USER_KEY_SECRET, "4111111111111111"]


def _leaks(haystack: bytes, where: str) -> list[str]:
    return [f"{needle} in {where}" for needle in _needles() if needle.encode() in haystack]


def test_no_corpus_secret_reaches_the_store_the_site_or_the_exports(
    make_app: Callable[..., Flask], db_path: Path | str, tmp_path: Path
) -> None:
    app = _corpus_app(make_app)
    warm_paths = ["/pay", *(path for path, _ in [*SECRET_PATHS, *ORDINARY_PATHS])]
    warm(app, warm_paths, SLOW_S)
    sent = _send_corpus(app)
    flush(app)
    app.extensions["flamewatch"].close()

    outliers = list_outliers(str(db_path))
    captured = [load_outlier(str(db_path), outlier.id) for outlier in outliers]
    requests = [stored["request"] for stored in captured]
    slow = [r for r in requests if (r.get("query") or {}).get("slow") == "1"]
    assert len(slow) == sent  # every slow request was captured: the whole corpus was looked at
    leaks = _leaks(_store_bytes(db_path, tmp_path), "the store")

    site = tmp_path / "site"
    write_site(str(db_path), site)
    files = [path for path in site.rglob("*") if path.is_file()]
    assert any(path.name == "profile.speedscope.json" for path in files)
    leaks += [leak for path in files for leak in _leaks(path.read_bytes(), str(path))]
    for outlier in outliers:
        if outlier.profile_bytes:
            session = load_session(str(db_path), outlier.id)
            for fmt in FORMATS:
                leaks += _leaks(export_profile(session, fmt), f"outlier {outlier.id}'s {fmt}")
    assert not leaks
    _assert_ordinary_values_are_kept(requests)


def _assert_ordinary_values_are_kept(requests: list[dict[str, Any]]) -> None:
    queries = [r["query"] for r in requests if "sort" in (r.get("query") or {})]
    forms = [r["form"] for r in requests if r.get("form") and "page" in r["form"]]
    bodies = [r["json"]["order"]["lines"][0] for r in requests if "order" in (r.get("json") or {})]
    assert queries
    assert forms
    assert bodies
    for found in [*queries, *forms, *bodies]:
        for key, value in ORDINARY_VALUES.items():
            assert found[key] == value, (key, found[key])
        assert {found[key] for key in SECRET_KEYS if key in found} == {"[redacted]"}
    (shaped,) = [r["query"] for r in requests if "tenant_ref" in (r.get("query") or {})]
    assert shaped["tenant_ref"] == shaped["InternalId"] == "[redacted]"
    paths = {r["path"] for r in requests}
    for sent, stored in ORDINARY_PATHS:
        assert (stored or sent) in paths, (sent, sorted(paths))
    assert "/reset/[redacted]" in paths
    assert "/unlock/[redacted]" in paths
    assert "/files/docs/[redacted]/readme.txt" in paths
    referers = [r["headers"]["referer"] for r in requests if "referer" in r.get("headers", {})]
    assert referers == ["https://shop.example/reset/[redacted]?token=[redacted]&page=3"]
    agents = {r["headers"].get("user-agent") for r in requests if r.get("headers")}
    assert "corpus-agent/1.0" in agents
    (named,) = [r["headers"] for r in requests if len(r.get("headers") or {}) > 20]
    named.pop("user-agent")  # the test client's
    assert set(named.values()) == {"[redacted]"}  # every secret header name, but not dropped
    assert len(named) == len({key.lower() for key in HEADER_KEYS} - NEVER_STORED_HEADERS)
