"""Redacting secrets from request parameters: keys, card numbers, truncation, serialisability."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from werkzeug.datastructures import MultiDict

from flamewatch.sampler import redact
from flamewatch.sampler.redact import (
    DEFAULT_SECRET_KEYS,
    NEVER_STORED_HEADERS,
    REDACTED,
    REDACTED_CARD,
    Redactor,
)

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


def test_every_default_fragment_is_documented_in_the_module_docstring() -> None:
    assert redact.__doc__ is not None
    for fragment in DEFAULT_SECRET_KEYS:
        assert f"``{fragment}``" in redact.__doc__


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
