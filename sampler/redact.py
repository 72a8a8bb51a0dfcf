"""Redacting secrets from an outlier's request parameters before anything is stored.

Query args, form fields, the JSON body and chosen headers all pass through a :class:`Redactor`,
whose outputs (dicts, lists, str, int, float, bool, None) ``orjson.dumps`` always accepts.

Secret keys -- a key (query arg, form field, JSON key at any depth, header name) is secret when

1. *substring rule*: the key, case-folded with every character that is not a letter or digit
   removed (``-``, ``_``, ``.``, spaces, brackets ...), contains a substring fragment or an
   extra key from the config normalised the same way; or
2. *whole-word rule*: one of its words is exactly ``auth`` or ``ssn``. Words come from splitting
   at non-alphanumerics and camelCase boundaries: ``X-Auth-Token`` is x, auth, token;
   ``basicAuth`` is basic, auth. Too short for rule 1: "author", "class_name" must not match.

Default fragments (:data:`DEFAULT_SECRET_KEYS`), all substrings except the last two:

- ``password``, ``passwd``, ``pwd``: "PassWord", "user.password", "new_pwd"
- ``secret``: "client_secret"; ``token``: "refreshToken", "X-CSRF-Token", "access_token"
- ``apikey``: "api_key", "api-key", "API Key", "apiKey"; ``accesskey``: "aws_access_key_id"
- ``privatekey``: "private_key"; ``authorization``: "Authorization", "proxy_authorization"
- ``cookie``: "session_cookie"; ``session``: "sessionid"; ``csrf``, ``xsrf``: "X-XSRF-TOKEN"
- ``signature``: "X-Hub-Signature"; ``credential``: "credentials"; ``iban``: "bank_iban"
- ``creditcard``, ``cardnumber``, ``ccnumber``, ``cvv``, ``cvc``: "card_number", "card_cvc"
- ``auth`` (whole word): "auth", "x-auth", "auth_header", "basic_auth", "OAuth"; not "author",
  "authority", "oauth_state" (the word rule cannot see inside "oauth")
- ``ssn`` (whole word): "ssn", "user_ssn", "userSSN"; not "class_name", "business_number"

Accepted false positives: "tokenizer_name", "session_length", "secretary", "cookie_consent".
Not secret: "keyboard", "description", "monkey". Extra keys always use rule 1.

Values -- a secret key's value (in JSON its whole subtree) becomes :data:`REDACTED`. Otherwise:

- 13-19 digits, optionally split by single spaces or dashes, that pass the Luhn check become
  :data:`REDACTED_CARD` inside any string (and as whole integers); the rest stays. Each run of
  digit groups is searched from the left for the longest group-aligned span that qualifies, so
  a card followed by its CVV is found; numbers failing Luhn stay.
- Strings (keys too) longer than ``max_value_chars`` are cut to it plus ``…[+N chars]``, N
  counting the original characters past the limit; cards are masked before the cut.
- ``bytes`` become ``[N bytes]``, other objects their truncated ``repr``, integers outside
  orjson's 64-bit range ``[int of N bits]``. Tuples and sets become lists.
- Containers nested deeper than ``max_depth`` become ``[truncated: nested deeper than D]``.
  Past ``max_items`` entries a list ends with ``[truncated: N more items]``; a dict (or query)
  gets that marker under the key ``[truncated]``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from itertools import islice

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "NEVER_STORED_HEADERS",
    "REDACTED",
    "REDACTED_CARD",
    "WORD_ONLY_KEYS",
    "Redactor",
]

REDACTED = "[redacted]"
REDACTED_CARD = "[redacted card]"
TRUNCATED_KEY = "[truncated]"

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "apikey", "accesskey", "privatekey",
    "authorization", "cookie", "session", "csrf", "xsrf", "signature", "credential",
    "creditcard", "cardnumber", "ccnumber", "cvv", "cvc", "iban", "auth", "ssn",
)  # fmt: skip
#: the fragments of :data:`DEFAULT_SECRET_KEYS` that only match as a whole word
WORD_ONLY_KEYS: frozenset[str] = frozenset({"auth", "ssn"})
NEVER_STORED_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)

_NOT_ALNUM = re.compile(r"[\W_]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_TOKENS = re.compile(r"[0-9]+|[ -]")
_CARD_SPAN = 37  # the most characters a card can take: 19 digits and 18 separators
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can serialise
_Items = Iterable[tuple[str, object]] | Mapping[str, object]


def _normalise(key: str) -> str:
    return _NOT_ALNUM.sub("", key.casefold())


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _card_end(groups: list[str], start: int) -> int | None:
    """The index after the longest span of ``groups`` from ``start`` that is a card number."""
    end, digits = None, ""
    for index in range(start, len(groups)):
        digits += groups[index]
        if len(digits) > 19:
            break
        if _is_card(digits):
            end = index + 1
    return end


def _mask_run(match: re.Match[str]) -> str:
    tokens = _DIGIT_TOKENS.findall(match.group())
    groups, out, index = tokens[0::2], [], 0
    while index < len(groups):
        end = _card_end(groups, index)
        out.append(groups[index] if end is None else REDACTED_CARD)
        index = index + 1 if end is None else end
        if index < len(groups):
            out.append(tokens[2 * index - 1])  # the separator before group ``index``
    return "".join(out)


def _mask_cards(text: str) -> str:
    return _DIGIT_RUN.sub(_mask_run, text)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"[unrepresentable {type(value).__name__}]"


def _pairs(items: _Items) -> Iterable[tuple[str, object]]:
    if not isinstance(items, Mapping):
        return items
    getlist = getattr(items, "getlist", None)  # a werkzeug MultiDict: keep repeated keys
    if callable(getlist):
        return ((key, value) for key in items for value in getlist(key))
    return items.items()


class Redactor:
    """Scrubs request parameters as the module docstring describes; immutable, thread-safe."""

    def __init__(
        self,
        extra_keys: Iterable[str] = (),
        *,
        max_value_chars: int = 1024,
        max_depth: int = 20,
        max_items: int = 200,
    ) -> None:
        if min(max_value_chars, max_depth, max_items) < 1:
            raise ValueError("max_value_chars, max_depth and max_items must be at least 1")
        if isinstance(extra_keys, str):
            extra_keys = (extra_keys,)
        self.extra_keys = tuple(_normalise(key) for key in extra_keys)
        if not all(self.extra_keys):
            raise ValueError("every extra secret key needs at least one letter or digit")
        substrings = [key for key in DEFAULT_SECRET_KEYS if key not in WORD_ONLY_KEYS]
        self._substrings = re.compile("|".join(map(re.escape, [*substrings, *self.extra_keys])))
        self.max_value_chars, self.max_depth, self.max_items = max_value_chars, max_depth, max_items

    def is_secret_key(self, key: str) -> bool:
        """Whether ``key`` names a secret, by the two rules in the module docstring."""
        if self._substrings.search(_normalise(key)):
            return True
        return any(word.lower() in WORD_ONLY_KEYS for word in _WORDS.findall(key))

    def value(self, value: object) -> object:
        """One value with no key: cards masked, long strings cut; containers go to :meth:`json`."""
        if isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return self.json(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self._int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, (bytes, bytearray)):
            return f"[{len(value)} bytes]"
        if isinstance(value, memoryview):
            return f"[{value.nbytes} bytes]"
        return self._text(_safe_repr(value))

    def mapping(self, items: _Items) -> dict[str, object | list[object]]:
        """Query args or form fields; a key given more than once maps to a list of its values."""
        grouped: dict[str, list[object]] = {}
        for key, item in _pairs(items):
            grouped.setdefault(key, []).append(item)
        out: dict[str, object | list[object]] = {}
        for count, (key, values) in enumerate(grouped.items()):
            if count == self.max_items:
                out[TRUNCATED_KEY] = self._more(len(grouped) - count)
                break
            if self.is_secret_key(key):
                out[self._text(key)] = REDACTED
            elif len(values) == 1:
                out[self._text(key)] = self.value(values[0])
            else:
                out[self._text(key)] = self._list(values, 0)
        return out

    def json(self, data: object) -> object:
        """A parsed JSON body: secret keys' subtrees redacted at any depth, scalars scrubbed."""
        return self._walk(data, 0)

    def headers(self, items: Iterable[tuple[str, str]], allowed: Collection[str]) -> dict[str, str]:
        """The ``allowed`` headers minus :data:`NEVER_STORED_HEADERS`, keyed by lower-case name;
        repeated headers are joined with ``", "``."""
        wanted = {name.lower() for name in allowed} - NEVER_STORED_HEADERS
        values: dict[str, list[str]] = {}
        secret: set[str] = set()
        for name, raw in items:
            lower = name.lower()
            if lower in wanted:
                values.setdefault(lower, []).append(raw)
                if self.is_secret_key(name):
                    secret.add(lower)
        return {
            name: REDACTED if name in secret else self._text(", ".join(raw))
            for name, raw in values.items()
        }

    def _walk(self, data: object, depth: int) -> object:
        if not isinstance(data, (Mapping, list, tuple, set, frozenset)):
            return self.value(data)
        if depth >= self.max_depth:
            return f"[truncated: nested deeper than {self.max_depth}]"
        return self._dict(data, depth) if isinstance(data, Mapping) else self._list(data, depth)

    def _dict(self, data: Mapping[object, object], depth: int) -> dict[str, object]:
        out: dict[str, object] = {}
        for count, (key, item) in enumerate(data.items()):
            if count == self.max_items:
                out[TRUNCATED_KEY] = self._more(len(data) - count)
                break
            name = key if isinstance(key, str) else _safe_repr(key)
            secret = self.is_secret_key(name)
            out[self._text(name)] = REDACTED if secret else self._walk(item, depth + 1)
        return out

    def _list(self, data: Collection[object], depth: int) -> list[object]:
        out = [self._walk(item, depth + 1) for item in islice(data, self.max_items)]
        if len(data) > self.max_items:
            out.append(self._more(len(data) - self.max_items))
        return out

    def _more(self, count: int) -> str:
        return f"[truncated: {count} more items]"

    def _int(self, value: int) -> int | str:
        if not _INT_MIN <= value <= _INT_MAX:
            return f"[int of {value.bit_length()} bits]"
        return REDACTED_CARD if value > 0 and _is_card(str(int(value))) else int(value)

    def _text(self, text: str) -> str:
        limit = self.max_value_chars
        if len(text) <= limit:
            return _mask_cards(text)
        head = _mask_cards(text[: limit + _CARD_SPAN])[:limit]
        return f"{head}…[+{len(text) - limit} chars]"
