"""Redacting secrets from request parameters: keys, card numbers, truncation, serialisability."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from werkzeug.datastructures import MultiDict

from flamewatch.sampler import redact
from flamewatch.sampler.redact import (
    EXACT_KEYS,
    NEVER_STORED_HEADERS,
    NOT_SECRET_KEYS,
    REDACTED,
    REDACTED_CARD,
    SUBSTRING_KEYS,
    TOKEN_SHAPES,
    WORD_KEYS,
    Redactor,
    looks_random,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "redaction.md"

#: keys every default fragment must catch, in the spellings apps actually use
SECRET_KEYS = [
    *("password", "PassWord", "user.password", "user[password]", "passwd", "pwd", "new_pwd"),
    *("secret", "client_secret", "X-Secret", "token", "refreshToken", "access_token"),
    *("X-CSRF-Token", "apikey", "api_key", "api-key", "API Key", "apiKey", "Api-Key"),
    *("X-Api-Key", "accesskey", "aws_access_key_id", "privatekey", "private_key"),
    *("authorization", "X-Forwarded-Authorization", "auth", "AUTH", "x-auth", "auth_header"),
    *("basic_auth", "basicAuth", "X-Auth-User", "OAuth", "cookie", "session_cookie", "session"),
    *("sessionid", "csrf", "csrfmiddlewaretoken", "xsrf", "X-XSRF-TOKEN", "signature"),
    *("X-Hub-Signature", "credential", "credentials", "creditcard", "credit_card"),
    *("cardnumber", "card_number", "ccnumber", "cc-number", "cvv", "cvc", "card_cvc"),
    *("ssn", "user_ssn", "userSSN", "iban", "bank_iban"),
]
ORDINARY_KEYS = [
    *("author", "author_name", "authority", "oauth_state", "keyboard", "description"),
    *("monkey", "class_name", "business_number", "usersSnapshot", "username", "q", "page"),
]
#: documented false positives: substring matches the rule accepts on purpose
OVER_MATCHED_KEYS = ["tokenizer_name", "session_length", "secretary", "cookie_consent"]
HEADER_SECRET_KEYS = [key for key in SECRET_KEYS if " " not in key and "[" not in key]
CARDS = {
    "visa-spaces": "4111 1111 1111 1111",
    "visa-dashes": "4012-8888-8888-1881",
    "visa-13-digits": "4222222222222",
    "mastercard-spaces": "5555 5555 5555 4444",
    "mastercard-dashes": "5500-0000-0000-0004",
    "amex-spaces": "3782 822463 10005",
    "amex-dashes": "3714-496353-98431",
}
NON_LUHN_16_DIGITS = "1234567812345678"


def _secret_for(key: str) -> str:
    return f"S3CRET-{sum(map(ord, key)):05d}-{len(key)}"


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _via_query(redactor: Redactor, text: str) -> object:
    return redactor.mapping([("note", text), ("page", "2")])


def _via_form(redactor: Redactor, text: str) -> object:
    return redactor.mapping({"note": text, "name": "Ann"})


def _via_json(redactor: Redactor, text: str) -> object:
    return redactor.json({"order": [{"lines": [{"meta": {"note": text}}]}]})


def _via_header(redactor: Redactor, text: str) -> object:
    return redactor.headers([("X-Note", text), ("Accept", "*/*")], ["x-note"])


CHANNELS: dict[str, Callable[[Redactor, str], object]] = {
    "query": _via_query,
    "form": _via_form,
    "json": _via_json,
    "header": _via_header,
}


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


# -- secret keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", SECRET_KEYS, ids=SECRET_KEYS)
def test_default_fragments_match_common_spellings(key: str) -> None:
    assert Redactor().is_secret_key(key)


@pytest.mark.parametrize("key", ORDINARY_KEYS, ids=ORDINARY_KEYS)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not Redactor().is_secret_key(key)


@pytest.mark.parametrize("key", OVER_MATCHED_KEYS, ids=OVER_MATCHED_KEYS)
def test_documented_false_positives_are_redacted(key: str) -> None:
    assert Redactor().is_secret_key(key)


def _documented_list(name: str) -> list[str]:
    """The list docs/redaction.md publishes between ``<!-- list: NAME -->`` and its end."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(rf"<!-- list: {name} -->\n(.*?)<!-- end list -->", text, re.S)
    assert found is not None, f"docs/redaction.md has no list {name}"
    block = found.group(1).strip()
    if block.startswith("- "):
        return [line.strip()[2:] for line in block.splitlines()]
    return re.findall(r"`([^`]+)`", block)


def _as_docs(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SUBSTRING_KEYS", list(SUBSTRING_KEYS)),
        ("WORD_KEYS", list(WORD_KEYS)),
        ("EXACT_KEYS", list(EXACT_KEYS)),
        ("NOT_SECRET_KEYS", list(NOT_SECRET_KEYS)),
        ("NEVER_STORED_HEADERS", sorted(NEVER_STORED_HEADERS)),
        ("TOKEN_SHAPES", [what for what, _ in TOKEN_SHAPES]),
    ],
)
def test_the_docs_publish_the_codes_own_lists(name: str, expected: list[str]) -> None:
    documented = _documented_list(name)
    assert documented == expected, f"in docs/redaction.md, list {name} should read:\n" + (
        "\n".join(f"- {item}" for item in expected)
        if name == "TOKEN_SHAPES"
        else _as_docs(expected)
    )


def test_every_session_cookie_the_docs_list_is_secret() -> None:
    cookies = _documented_list("SESSION_COOKIES")
    assert len(cookies) >= 20
    redactor = Redactor()
    assert [cookie for cookie in cookies if not redactor.is_secret_key(cookie)] == []


def test_the_module_docstring_points_to_the_docs() -> None:
    assert redact.__doc__ is not None
    assert "docs/redaction.md" in redact.__doc__
    assert DOCS.is_file()


def test_never_stored_headers_are_the_credential_headers() -> None:
    expected = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
    assert expected == NEVER_STORED_HEADERS


@pytest.mark.parametrize("key", SECRET_KEYS, ids=SECRET_KEYS)
def test_mapping_redacts_secret_keys_and_keeps_the_rest(key: str) -> None:
    secret = _secret_for(key)
    out = Redactor().mapping([("page", "3"), (key, secret)])
    assert out == {"page": "3", key: REDACTED}
    assert secret not in _dumps(out)


@pytest.mark.parametrize("key", SECRET_KEYS, ids=SECRET_KEYS)
def test_json_redacts_secret_keys_deep_in_lists_of_dicts(key: str) -> None:
    secret = _secret_for(key)
    data = {"a": [{"b": {"c": [{"keep": "visible", key: secret}]}}]}
    out: Any = Redactor().json(data)
    assert out["a"][0]["b"]["c"][0] == {"keep": "visible", key: REDACTED}
    assert secret not in _dumps(out)


@pytest.mark.parametrize("key", HEADER_SECRET_KEYS, ids=HEADER_SECRET_KEYS)
def test_headers_redacts_secret_looking_names(key: str) -> None:
    secret = _secret_for(key)
    items = [(key, secret), ("User-Agent", "curl/8")]
    out = Redactor().headers(items, [key.upper(), "user-agent"])
    if key.lower() in NEVER_STORED_HEADERS:
        assert out == {"user-agent": "curl/8"}
    else:
        assert out == {key.lower(): REDACTED, "user-agent": "curl/8"}
    assert secret not in _dumps(out)


def test_json_redacts_the_whole_subtree_under_a_secret_key() -> None:
    data = {"credentials": {"user": "ann", "keys": ["k-1", {"nested": "k-2"}]}, "id": 7}
    out = Redactor().json(data)
    assert out == {"credentials": REDACTED, "id": 7}
    assert "k-1" not in _dumps(out)
    assert "k-2" not in _dumps(out)


# -- headers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Authorization", "proxy-authorization", "COOKIE", "Set-Cookie"], ids=str.lower
)
def test_headers_never_stores_credential_headers_even_when_allowed(name: str) -> None:
    secret = "Bearer very-secret-value"
    out = Redactor().headers([(name, secret), ("Accept", "text/html")], [name, "accept"])
    assert out == {"accept": "text/html"}
    assert secret not in _dumps(out)


def test_headers_keeps_only_allowed_names_lower_cased() -> None:
    items = [("X-Request-Id", "abc"), ("User-Agent", "curl/8"), ("Accept", "*/*")]
    out = Redactor().headers(items, ["x-request-id", "USER-AGENT"])
    assert out == {"x-request-id": "abc", "user-agent": "curl/8"}


def test_headers_joins_repeated_values() -> None:
    items = [("X-Forwarded-For", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")]
    assert Redactor().headers(items, ["X-Forwarded-For"]) == {
        "x-forwarded-for": "10.0.0.1, 10.0.0.2"
    }


# -- extra keys from config ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["internal_id", "InternalId", "x.internal-id.v2", "TENANT REF"], ids=str
)
def test_extra_keys_match_like_defaults_in_every_entry_point(key: str) -> None:
    redactor = Redactor(["internal-id", "tenant_ref"])
    secret = _secret_for(key)
    assert not Redactor().is_secret_key(key)
    outputs = [
        redactor.mapping([(key, secret)]),
        redactor.json({"deep": [{"deeper": {key: secret}}]}),
        redactor.headers([(key, secret)], [key]),
    ]
    for out in outputs:
        assert REDACTED in _dumps(out)
        assert secret not in _dumps(out)


def test_extra_keys_keep_the_defaults() -> None:
    assert Redactor(["tenant"]).is_secret_key("password")


def test_a_single_string_of_extra_keys_is_one_key() -> None:
    redactor = Redactor("tenant_ref")
    assert redactor.is_secret_key("TenantRef")
    assert not redactor.is_secret_key("name")


@pytest.mark.parametrize("bad", ["", "--", " . "], ids=["empty", "dashes", "punctuation"])
def test_extra_keys_without_letters_or_digits_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="extra secret key"):
        Redactor([bad])


# -- card numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS, ids=str)
@pytest.mark.parametrize("card", CARDS.values(), ids=list(CARDS))
def test_card_numbers_are_masked_inside_longer_strings(channel: str, card: str) -> None:
    text = f"paid with {card} on 2024-01-15, order 42"
    out = _dumps(CHANNELS[channel](Redactor(), text))
    assert f"paid with {REDACTED_CARD} on 2024-01-15, order 42" in out
    assert card not in out
    assert card.replace(" ", "").replace("-", "") not in out


@pytest.mark.parametrize("channel", CHANNELS, ids=str)
def test_a_16_digit_number_failing_luhn_stays(channel: str) -> None:
    text = f"order {NON_LUHN_16_DIGITS} at 1700000000000000000"
    out = _dumps(CHANNELS[channel](Redactor(), text))
    assert text in out
    assert REDACTED_CARD not in out


def test_a_card_followed_by_its_cvv_is_still_masked() -> None:
    assert Redactor().value("4111 1111 1111 1111 123") == f"{REDACTED_CARD} 123"


def test_a_card_after_unrelated_digit_groups_is_still_masked() -> None:
    assert Redactor().value("ref 1234 4111-1111-1111-1111") == f"ref 1234 {REDACTED_CARD}"


def test_integers_that_are_card_numbers_are_masked() -> None:
    redactor = Redactor()
    assert redactor.value(4111111111111111) == REDACTED_CARD
    assert redactor.value(int(NON_LUHN_16_DIGITS)) == int(NON_LUHN_16_DIGITS)


# -- truncation ---------------------------------------------------------------------------------


def test_long_strings_are_cut_with_the_number_of_missing_chars() -> None:
    redactor = Redactor(max_value_chars=10)
    assert redactor.value("a" * 10) == "a" * 10
    assert redactor.value("a" * 25) == "a" * 10 + "…[+15 chars]"


def test_a_card_crossing_the_cut_is_masked_before_cutting() -> None:
    out = Redactor(max_value_chars=12).value("card: 4111 1111 1111 1111 thanks")
    assert isinstance(out, str)
    assert out.startswith("card: [redac")
    assert "4111" not in out


def test_deep_nesting_is_replaced_by_a_marker() -> None:
    data: object = "bottom"
    for level in range(30):
        data = {f"level{level}": data} if level % 2 else [data]
    out = Redactor().json(data)
    assert _depth(out) == 20
    assert "[truncated: nested deeper than 20]" in _dumps(out)
    assert "bottom" not in _dumps(out)


def test_many_list_items_are_cut_with_a_count() -> None:
    out = Redactor().json({"items": list(range(550))})
    assert out == {"items": [*range(200), "[truncated: 350 more items]"]}


def test_many_dict_keys_are_cut_with_a_count() -> None:
    out: Any = Redactor(max_items=5).json({f"k{n}": n for n in range(12)})
    assert list(out) == ["k0", "k1", "k2", "k3", "k4", "[truncated]"]
    assert out["[truncated]"] == "[truncated: 7 more items]"


def test_many_query_keys_and_repeats_are_cut_with_a_count() -> None:
    redactor = Redactor(max_items=3)
    out = redactor.mapping([(f"k{n}", "v") for n in range(5)] + [("k0", "w")] * 4)
    assert out == {"k0": ["v", "w", "w", "[truncated: 2 more items]"], "k1": "v", "k2": "v"} | {
        "[truncated]": "[truncated: 2 more items]"
    }


# -- query args and form fields ------------------------------------------------------------------


def test_repeated_query_keys_become_a_list_in_order() -> None:
    out = Redactor().mapping([("tag", "a"), ("page", "1"), ("tag", "b"), ("tag", "c")])
    assert out == {"tag": ["a", "b", "c"], "page": "1"}
    assert list(out) == ["tag", "page"]


def test_a_repeated_secret_key_is_redacted_once() -> None:
    out = Redactor().mapping([("token", "t-1"), ("token", "t-2")])
    assert out == {"token": REDACTED}
    assert "t-1" not in _dumps(out)


def test_a_werkzeug_multidict_keeps_its_repeated_values() -> None:
    args = MultiDict([("tag", "a"), ("tag", "b"), ("password", "pw-1")])
    assert Redactor().mapping(args) == {"tag": ["a", "b"], "password": REDACTED}


# -- other values and serialisability --------------------------------------------------------------


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_bytes_objects_and_huge_ints_become_short_strings() -> None:
    redactor = Redactor(max_value_chars=20)
    assert redactor.value(b"abc") == "[3 bytes]"
    assert redactor.value(bytearray(5)) == "[5 bytes]"
    assert redactor.value(2**70) == "[int of 71 bits]"
    assert Redactor().value(_BadRepr()) == "[unrepresentable _BadRepr]"
    text = redactor.value(object())
    assert isinstance(text, str)
    assert text.startswith("<object object at")
    assert "…[+" in text


def test_outputs_are_always_orjson_serialisable() -> None:
    data = {
        "set": {1, 2},
        "tuple": (1, "x"),
        "bytes": b"\x00\xff",
        "object": object(),
        "huge": -(2**100),
        "nan": float("nan"),
        "nested": {1: "int key", None: "none key", (1, 2): "tuple key"},
    }
    redactor = Redactor()
    orjson.dumps(redactor.json(data))
    orjson.dumps(redactor.mapping(data))
    orjson.dumps(redactor.value(data))


def test_limits_below_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Redactor(max_depth=0)


# -- property-ish: random structures never leak a secret -----------------------------------------

_WORDS = ["name", "items", "price", "meta", "tags", "id", "note", "data", "list", "value"]


def _decoy(rng: random.Random) -> object:
    return rng.choice([rng.randint(0, 10**6), rng.choice(_WORDS), None, 1.5, True, [1, "x"]])


def _with_secret_at(rng: random.Random, depth: int, key: str, secret: str) -> object:
    if depth == 0:
        payload = rng.choice([secret, [secret], {"value": secret}, {"list": [{"v": secret}]}])
        holder = {rng.choice(_WORDS) + "_x": _decoy(rng) for _ in range(rng.randint(0, 3))}
        holder[key] = payload
        return holder
    inner = _with_secret_at(rng, depth - 1, key, secret)
    if rng.random() < 0.5:
        items = [_decoy(rng) for _ in range(rng.randint(0, 4))]
        items.insert(rng.randint(0, len(items)), inner)
        return items
    mapping = {f"{rng.choice(_WORDS)}{n}": _decoy(rng) for n in range(rng.randint(0, 4))}
    mapping[f"{rng.choice(_WORDS)}_path"] = inner
    return mapping


def test_random_structures_never_leak_a_secret_under_a_secret_key() -> None:
    redactor = Redactor()
    for seed in range(500):
        rng = random.Random(seed)
        key = rng.choice(SECRET_KEYS)
        secret = f"SECRET{rng.getrandbits(64):016x}"
        data = _with_secret_at(rng, rng.randint(0, 17), key, secret)
        assert secret in _dumps(data)
        out = _dumps(redactor.json(data))
        assert secret not in out, f"seed {seed}: {key!r} leaked"
        assert REDACTED in out, f"seed {seed}: nothing redacted"


# -- the issue's misses and the rules that catch them ---------------------------------------------

#: keys the issue found stored in clear
ISSUE_MISSED_KEYS = [
    *("passphrase", "pass", "pw", "pin", "otp", "code", "sid", "PHPSESSID", "jwt", "bearer"),
    *("key", "sig", "hmac", "account_number", "social_security_number"),
]
#: keys a word rule or an exact key would catch if it looked inside words
WORD_RULE_ORDINARY_KEYS = [
    *("spin", "passport", "compass", "bypass", "sidebar", "inside", "keyboard", "keyword"),
    *("signal", "signup", "pinned", "topic", "zip_code", "country_code", "status_code"),
    *("codename", "sort_key", "primaryKey", "keyCode", "otpauth_label"),
]


@pytest.mark.parametrize("key", ISSUE_MISSED_KEYS)
def test_the_keys_the_issue_found_in_clear_are_secret(key: str) -> None:
    assert Redactor().is_secret_key(key)


@pytest.mark.parametrize("key", WORD_RULE_ORDINARY_KEYS)
def test_short_keys_only_match_as_words(key: str) -> None:
    assert not Redactor().is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["x-csrf-token", "X_CSRF_TOKEN", "xCsrfToken", "X.Csrf.Token", "x csrf token"]
)
def test_keys_are_normalised_before_matching(key: str) -> None:
    assert Redactor().is_secret_key(key)


def test_a_verdict_is_the_same_when_cached_and_long_keys_are_judged_each_time() -> None:
    redactor = Redactor()
    long_key = "x" * 500 + "_token"
    assert [redactor.is_secret_key("user_pin") for _ in range(3)] == [True] * 3
    assert [redactor.is_secret_key(long_key) for _ in range(3)] == [True] * 3
    assert [redactor.is_secret_key("page") for _ in range(3)] == [False] * 3


@pytest.mark.parametrize("name", ["Userpin", "Basicauth", "X-Userpass", "Oauth", "X-Apikey"])
def test_header_names_lose_their_case_so_a_part_ending_in_a_word_key_is_secret(name: str) -> None:
    redactor = Redactor()
    assert redactor.headers([(name, "h-s3cret")], [name]) == {name.lower(): REDACTED}


@pytest.mark.parametrize("name", ["Accept-Language", "X-Request-ID", "X-Forwarded-For", "Origin"])
def test_ordinary_header_names_are_kept(name: str) -> None:
    assert Redactor().headers([(name, "plain")], [name]) == {name.lower(): "plain"}


# -- secret-shaped values under any key -----------------------------------------------------------

#: one example (and the part that must go) per entry of TOKEN_SHAPES
TOKEN_EXAMPLES: dict[str, tuple[str, str]] = {
    "JSON Web Token (JWS or JWE)": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "dBjftJeZ4CVPmB92K27uhbUJU1p1r",
    ),
    "AWS access key ID": ("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
    "GitHub token": ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "16C7e42F292c6912E7710c8"),
    "GitLab token": ("glpat-x8Kq2mZ9vN3bR7tY1wQ4", "x8Kq2mZ9vN3bR7tY1wQ4"),
    "Slack token": ("xoxp-2048-4096-abcdEF12", "abcdEF12"),
    "Slack webhook": (
        "https://hooks.slack.com/services/T000/B000/XXXXXXXXsecretXX",
        "XXXXXXXXsecretXX",
    ),
    "Stripe secret key": ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    "Google API key": ("AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "DaGmWKa4JsXZ-HjGw7ISLn"),
    "Google OAuth access token": ("ya29.a0AfH6SMBx7Kq2mZ9vN3bR7tY1", "a0AfH6SMBx7Kq2mZ9vN3bR7tY1"),
    "OpenAI or Anthropic API key": ("sk-ant-api03-Kq2mZ9vN3bR7tY1wQ4xZ", "Kq2mZ9vN3bR7tY1wQ4xZ"),
    "npm token": ("npm_Kq2mZ9vN3bR7tY1wQ4xZKq2mZ9vN3bR7tY1w", "Kq2mZ9vN3bR7tY1wQ4xZ"),
    "PyPI token": ("pypi-AgEIcHlwaS5vcmc" + "Kq2mZ9vN3bR7" * 5, "Kq2mZ9vN3bR7"),
    "SendGrid API key": ("SG.Kq2mZ9vN3bR7tY1wQ4xZ.Kq2mZ9vN3bR7tY1wQ4xZab", "Kq2mZ9vN3bR7tY1wQ4xZ"),
    "Shopify token": ("shpat_" + "a1b2c3d4" * 4, "a1b2c3d4a1b2c3d4"),
}


def test_every_token_shape_has_an_example() -> None:
    assert sorted(TOKEN_EXAMPLES) == sorted(what for what, _ in TOKEN_SHAPES)


@pytest.mark.parametrize("channel", CHANNELS, ids=str)
@pytest.mark.parametrize("shape", TOKEN_EXAMPLES, ids=list(TOKEN_EXAMPLES))
def test_tokens_are_redacted_by_their_shape_under_any_key(channel: str, shape: str) -> None:
    example, core = TOKEN_EXAMPLES[shape]
    out = _dumps(CHANNELS[channel](Redactor(), f"see {example} here"))
    assert core not in out
    assert REDACTED in out
    assert "see " in out


@pytest.mark.parametrize(
    "text",
    [
        "task-assignment-for-the-whole-team",  # no sk- key inside a word
        "disk-usage-report-for-all-the-servers",
        "TASKIAIOSFODNN7EXAMPLEX",  # no AKIA... glued to a word
        "the token expired, please sign in again",
        "Basic information about bearer bonds",
        "page=2&sort=price&q=blue+shoes",
        "https://example.com/items/42?page=2&sort=price#reviews",
        "https://mastodon.social/@alice",
        "mailto:ann@example.com",
        "ann@example.com",
        "order 1234567812345678 on 2024-01-15",
        "550e8400-e29b-41d4-a716-446655440000",
        '{"user": "ann", "page": 2}',
        "at 12:30 today, note: fine",
        "https://h.example:8443/a?b=c",
    ],
)
def test_ordinary_text_stays_as_it_is(text: str) -> None:
    assert Redactor().text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:hunter2@db:5432/shop", f"postgresql://app:{REDACTED}@db:5432/shop"),
        ("redis://:hunter2@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        ("mongodb+srv://u:p%40ss@c.example.net/db", f"mongodb+srv://u:{REDACTED}@c.example.net/db"),
        (
            "https://x:y@example.com/a https://z:w@example.org/b",
            f"https://x:{REDACTED}@example.com/a https://z:{REDACTED}@example.org/b",
        ),
        (
            "https://Zk3xQ9mP2vL8nR4tW7yB1cD6@github.com/o/r.git",
            f"https://{REDACTED}@github.com/o/r.git",
        ),
        ("https://ann@example.com/", "https://ann@example.com/"),
    ],
)
def test_the_password_of_a_urls_user_info_is_redacted(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "https://a.example/cb?access_token=t0k&page=2",
            f"https://a.example/cb?access_token={REDACTED}&page=2",
        ),
        (
            "https://a.example/#id_token=t0k&state=s",
            f"https://a.example/#id_token={REDACTED}&state=s",
        ),
        (
            "/login?next=%2Freset%3Ftoken%3Dt0k%26a%3Db",
            f"/login?next=%2Freset%3Ftoken%3D{REDACTED}%26a%3Db",
        ),
        (
            "host=db user=app password=hunter2 dbname=shop",
            f"host=db user=app password={REDACTED} dbname=shop",
        ),
        ("Server=db;User Id=app;Password=hunter2;", f"Server=db;User Id=app;Password={REDACTED};"),
        ("theme=dark; sessionid=abc123; lang=en", f"theme=dark; sessionid={REDACTED}; lang=en"),
        ('password="two words" next=1', f'password="{REDACTED}" next=1'),
        ("token==abc", f"token={REDACTED}"),
        ("password: hunter2 (user ann)", f"password: {REDACTED} (user ann)"),
        ("X-Api-Key: k-123\nAccept: */*", f"X-Api-Key: {REDACTED}\nAccept: */*"),
        ("token=&page=1", "token=&page=1"),
    ],
)
def test_secret_name_value_pairs_inside_text_are_redacted(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_json_inside_a_string_has_its_secret_keys_redacted() -> None:
    text = '{"user": "ann", "api_key": "k-123", "pin": 4321, "note": "x"}'
    expected = f'{{"user": "ann", "api_key": "{REDACTED}", "pin": {REDACTED}, "note": "x"}}'
    assert Redactor().text(text) == expected


@pytest.mark.parametrize(
    "block",
    [
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecretbody\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAsecretbody\n",  # no end line
        "-----BEGIN CERTIFICATE-----\nMIIDsecretbody\n-----END CERTIFICATE-----",
    ],
)
def test_pem_blocks_are_redacted(block: str) -> None:
    out = Redactor().text(f"key: {block} (end)")
    assert "secretbody" not in out
    assert out.startswith(f"key: {REDACTED}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Bearer abc.def-123", f"Bearer {REDACTED}"),
        ("it said bearer 0123456789", f"it said bearer {REDACTED}"),
        ("Authorization=Bearer t0k3n-value", f"Authorization={REDACTED} {REDACTED}"),
        ("Basic dXNlcjpodW50ZXIy", f"Basic {REDACTED}"),  # user:hunter2
        ("Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", f"Token {REDACTED}"),
        ("Basic information", "Basic information"),
        ("Token ring", "Token ring"),
    ],
)
def test_http_credentials_inside_text_are_redacted(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_a_secret_crossing_the_cut_is_redacted_whole() -> None:
    jwt, core = TOKEN_EXAMPLES["JSON Web Token (JWS or JWE)"]
    out = Redactor(max_value_chars=30).text("x" * 19 + " " + jwt + " tail")
    assert out.startswith("x" * 19 + " " + REDACTED)
    assert jwt[:8] not in out.replace(REDACTED, "")
    assert core not in out


def test_text_past_the_scanned_window_is_dropped_unread() -> None:
    text = "a" * (redact.SCAN_MARGIN + 50) + " password=hunter2"
    out = Redactor(max_value_chars=10).text(text)
    assert "hunter2" not in out
    assert out == "a" * 10 + f"…[+{len(text) - 10} chars]"


def test_headers_scrub_a_referers_query_and_path_and_an_origins_query() -> None:
    items = [
        ("Referer", "https://shop.example/reset/Zk3xQ9mP2vL8nR4tW7yB1cD6?token=t0k&page=3"),
        ("Origin", "https://shop.example?access_token=t0k"),
        ("Referer-Policy", "same-origin"),
    ]
    out = Redactor().headers(items, ["Referer", "Origin", "Referer-Policy"])
    assert out == {
        "referer": f"https://shop.example/reset/{REDACTED}?token={REDACTED}&page=3",
        "origin": f"https://shop.example?access_token={REDACTED}",
        "referer-policy": "same-origin",
    }


# -- paths ----------------------------------------------------------------------------------------

RANDOM = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"


@pytest.mark.parametrize(
    ("path", "rule", "expected"),
    [
        ("/reset/abc", "/reset/<token>", f"/reset/{REDACTED}"),
        ("/reset/abc/", "/reset/<token>/", f"/reset/{REDACTED}/"),
        ("/k/abc/items", "/k/<string(length=3):key>/items", f"/k/{REDACTED}/items"),
        ("/confirm/abc", "/confirm/<reset_token>", f"/confirm/{REDACTED}"),
        ("/u/7/keys/abc", "/u/<int:user_id>/keys/<api_key>", f"/u/7/keys/{REDACTED}"),
        ("/unlock/4321", "/unlock/<int:pin>", f"/unlock/{REDACTED}"),
        ("/items/42", "/items/<int:item_id>", "/items/42"),
        ("/p/1.5", "/p/<float:price>", "/p/1.5"),
        (f"/o/{RANDOM[:32]}", "/o/<uuid:order_id>", f"/o/{RANDOM[:32]}"),
        ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/<oid>", None),
        ("/docs/how-to-deploy-flask-2024", "/docs/<slug>", None),
        (f"/docs/{RANDOM}", "/docs/<slug>", f"/docs/{REDACTED}"),
        (f"/f/a/{RANDOM}/b.txt", "/f/<path:name>", f"/f/a/{REDACTED}/b.txt"),
        (f"/hook/{RANDOM}/5", f"/hook/{RANDOM}/<int:n>", None),  # the app's own text stays
        (f"/x/{RANDOM}", None, f"/x/{REDACTED}"),  # no rule: shape only
        (f"/y/{RANDOM}", "/other/<token>", f"/y/{REDACTED}"),  # the rule does not match
        ("/y/abc", "/other/<token>", "/y/abc"),
        ("/s/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "/s/<int:n>", f"/s/{REDACTED}"),
    ],
)
def test_paths_are_lined_up_with_their_rule(
    path: str, rule: str | None, expected: str | None
) -> None:
    assert Redactor().path(path, rule) == (expected or path)


@pytest.mark.parametrize(
    "segment",
    [
        RANDOM,
        "Zk3xQ9mP2vL8nR4tW7yB1cD6fH0jS5aE",  # secrets.token_urlsafe
        "3q2-7wEXr_f9Zk3xQ9mP2vL8nR4tW7",
        "c9bf9e5716854c89bafbff5af830be8a",  # a UUID's hex: indistinguishable from token_hex
        "507f1f77bcf86cd799439011",  # a MongoDB ObjectId, likewise
    ],
)
def test_random_looking_segments(segment: str) -> None:
    assert looks_random(segment)


@pytest.mark.parametrize(
    "segment",
    [
        "42",
        "index.html",
        "how-to-deploy-flask-2024",
        "report_2024_Q3_final_version",
        "550e8400-e29b-41d4-a716-446655440000",
        "C9BF9E57-1685-4C89-BAFB-FF5AF830BE8A",
        "12345678901234567890",
        "a-very-long-slug-made-only-of-ordinary-words",
        "v1.2.3-rc1+build.5",
        "Zk3xQ9mP2vL8nR4",  # too short to tell
        "hello%20world%20and%20more%20words",
    ],
)
def test_ordinary_segments(segment: str) -> None:
    assert not looks_random(segment)
