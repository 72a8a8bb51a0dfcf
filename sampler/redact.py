"""Redacting secrets from an outlier's request facts before anything is stored.

Query args, form fields, the JSON body, the kept headers and the path all pass through a
:class:`Redactor` on the writer thread, whose outputs (dicts, lists, str, int, float, bool,
None) ``orjson.dumps`` always accepts. ``docs/redaction.md`` is the user's description of the
rules; ``tests/test_redact.py`` checks that its lists are the lists below.

Secret keys -- a key (query arg, form field, JSON key at any depth, header name, rule variable)
is secret when, case-folded with everything but letters and digits removed (``X-CSRF-Token``
-> ``xcsrftoken``), it

1. contains one of :data:`SUBSTRING_KEYS` or a key from the config normalised the same way, or
2. is one of :data:`EXACT_KEYS` (``code``: the OAuth code, but not ``zip_code``), or
3. has a word in :data:`WORD_KEYS`, unless it is one of :data:`NOT_SECRET_KEYS`. Words come from
   splitting at non-alphanumerics and camelCase boundaries (``X-Auth-Token``: x, auth, token;
   ``userPin``: user, pin); these keys are too short to look for inside other words ("author",
   "spin", "passport" are not secret). A header name, whose case is lost on the way, is also
   secret when a part of it ends with such a word (``Userpin``, ``Basicauth``).

The verdict for each key (up to 128 characters) is cached: apps send the same keys again.

Values -- a secret key's value (in JSON its whole subtree) becomes :data:`REDACTED`. Every other
string is scrubbed (:meth:`Redactor.text`): PEM blocks, the tokens of :data:`TOKEN_SHAPES`, the
password of a URL's user info (``scheme://user:[redacted]@host``), random-looking segments of a
URL's path, ``Bearer``/``Token`` and ``Basic`` credentials, and the value of each ``name=value``
or ``name: value`` pair (query strings, DSN keywords, cookie strings) and ``"name": value`` pair
(JSON inside a string) whose name is a secret key become :data:`REDACTED`; card numbers (13-19
digits, optionally split by single spaces or dashes, passing the Luhn check) become
:data:`REDACTED_CARD`, as whole integers too. Each run of digit groups is searched from the
left for the longest group-aligned span that qualifies, so a card followed by its CVV is found.

Paths -- :meth:`Redactor.path` lines the path up with its URL rule: the part a variable named
like a secret key matched (``/reset/<token>``) is redacted; a part an ``int``, ``float``,
``uuid`` or ``any`` converter matched is kept; every other segment is redacted when it looks
random (:func:`looks_random`: 20+ characters of which 16+ mix letters and digits, not a UUID).

Limits -- strings (keys too) longer than ``max_value_chars`` are cut to it plus ``…[+N chars]``,
N counting the redacted text's characters past the limit; only the first ``max_value_chars`` +
:data:`SCAN_MARGIN` characters are scanned, the rest is dropped unread. ``bytes`` become
``[N bytes]``, other objects their truncated ``repr``, integers outside orjson's 64-bit range
``[int of N bits]``. Tuples and sets become lists. Containers nested deeper than ``max_depth``
become ``[truncated: nested deeper than D]``. Past ``max_items`` entries a list ends with
``[truncated: N more items]``; a dict (or query) gets that marker under the key ``[truncated]``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Iterable, Mapping
from itertools import islice

__all__ = [
    "DEFAULT_SECRET_KEYS",
    "EXACT_KEYS",
    "NEVER_STORED_HEADERS",
    "NOT_SECRET_KEYS",
    "REDACTED",
    "REDACTED_CARD",
    "SCAN_MARGIN",
    "SUBSTRING_KEYS",
    "TOKEN_SHAPES",
    "WORD_KEYS",
    "Redactor",
    "looks_random",
]

REDACTED = "[redacted]"
REDACTED_CARD = "[redacted card]"
TRUNCATED_KEY = "[truncated]"

#: found anywhere in the normalised key (long enough not to hide inside ordinary words)
SUBSTRING_KEYS: tuple[str, ...] = (
    # passwords and pass phrases
    "password", "passwd", "passphrase", "passcode", "passkey", "pwd",
    # secrets, tokens, keys
    "secret", "token", "apikey", "accesskey", "privatekey", "privkey", "appkey", "authkey",
    "clientkey", "masterkey", "signingkey", "encryptionkey", "licensekey", "jwt", "bearer",
    "authorization", "authcode", "credential", "signature", "hmac", "mnemonic", "seedphrase",
    "connectionstring", "samlresponse", "samlrequest",
    # one-time codes
    "verificationcode", "securitycode", "confirmationcode", "recoverycode", "backupcode",
    "activationcode", "resetcode", "mfacode", "smscode",
    # sessions and their cookies (Django sessionid, Flask session, JSESSIONID, ASP.NET_SessionId,
    # laravel_session, rack.session, _gitlab_session, ... all contain "session")
    "session", "sessid", "cookie", "csrf", "xsrf", "antiforgery", "aspxauth", "remember",
    "cakephp", "wordpressloggedin", "wordpresssec", "postpass",
    # payment and identity numbers
    "creditcard", "cardnumber", "ccnumber", "cvv", "cvc", "iban", "accountnumber",
    "acctnumber", "routingnumber", "bankaccount", "socialsecurity", "passportnumber",
    "nationalid", "taxid",
)  # fmt: skip
#: a whole word of the key
WORD_KEYS: tuple[str, ...] = (
    "auth", "pass", "pw", "pin", "otp", "totp", "hotp", "sid", "sess", "key", "sig", "ssn",
    "dsn", "cfid",
)  # fmt: skip
#: the whole normalised key
EXACT_KEYS: tuple[str, ...] = ("code",)
#: normalised keys with a word of :data:`WORD_KEYS` that name no secret
NOT_SECRET_KEYS: tuple[str, ...] = (
    "sortkey", "primarykey", "foreignkey", "partitionkey", "cachekey", "lookupkey", "keycode",
    "keyname", "keytype", "keyid",
)  # fmt: skip
#: every default key, for callers that want one list
DEFAULT_SECRET_KEYS: tuple[str, ...] = (*SUBSTRING_KEYS, *WORD_KEYS, *EXACT_KEYS)
NEVER_STORED_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)
#: secret-shaped values found inside any string, under any key: (what it is, regex); a match
#: counts only where no letter or digit comes before it (``task-…`` holds no ``sk-`` key)
TOKEN_SHAPES: tuple[tuple[str, str], ...] = (
    ("JSON Web Token (JWS or JWE)", r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_.-]*"),
    ("AWS access key ID", r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AGPA|ANPA|ANVA|APKA)[A-Z0-9]{16}"),
    ("GitHub token", r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("GitLab token", r"gl(?:pat|dt|rt|ptt|cbt)-[A-Za-z0-9_-]{20,}"),
    ("Slack token", r"xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}"),
    ("Slack webhook", r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]+"),
    ("Stripe secret key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}"),
    ("Google API key", r"AIza[0-9A-Za-z_-]{35}"),
    ("Google OAuth access token", r"ya29\.[0-9A-Za-z_-]{20,}"),
    ("OpenAI or Anthropic API key", r"sk-[A-Za-z0-9_-]{20,}"),
    ("npm token", r"npm_[A-Za-z0-9]{36}"),
    ("PyPI token", r"pypi-AgE[A-Za-z0-9_-]{50,}"),
    ("SendGrid API key", r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"),
    ("Shopify token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
)
#: characters read past ``max_value_chars`` so a secret crossing the cut is still recognised
SCAN_MARGIN = 8192

_KEY_CACHE_SIZE, _KEY_CACHE_MAX_LEN, _RULE_CACHE_SIZE = 4096, 128, 1024
_SAFE_CONVERTERS = frozenset({"int", "float", "uuid", "any"})
_WORD_SET = frozenset(WORD_KEYS)
_EXACT_SET = frozenset(EXACT_KEYS)
_NOT_SECRET_SET = frozenset(NOT_SECRET_KEYS)
_WORD_KEY_ENDS = tuple(WORD_KEYS)
_HEADER_PARTS = re.compile(r"[-_.]+")

_NOT_ALNUM = re.compile(r"[\W_]+")
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_TOKENS = re.compile(r"[0-9]+|[ -]")
_TOKENS = re.compile("|".join(f"(?:{regex})" for _, regex in TOKEN_SHAPES))
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{1,64}-----.*?(?:-----END [A-Z0-9 ]{1,64}-----|\Z)", re.S)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://([^\s\"'<>/?#]*)([^\s\"'<>?#]*)")
#: the ``name=`` of a ``name=value`` pair (``%3D`` too: an encoded URL inside ``?next=``; and
#: ``name: value``); its value is read (:data:`_PAIR_VALUE`) only when the name is secret, and
#: pairs inside a value are searched too
_PAIR = re.compile(
    r"(?:%[0-9A-Fa-f]{2}|(?<![A-Za-z0-9_.\[\]-]))(?P<name>[A-Za-z0-9_.\[\]-]{1,128})"
    r"(?:=|%3[Dd]|[ \t]*:[ \t]*)"
)
_PAIR_VALUE = re.compile(r"\"[^\"]*\"?|'[^']*'?|(?:[^&;\s\"'<>%]|%(?!26|3[Bb]))+")
#: the ``"name":`` of JSON inside a string, and its value
_JSON_PAIR = re.compile(r"\"(?P<name>[^\"\\]{1,128})\"\s*:\s*")
_JSON_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*\"?|-?[0-9][0-9.eE+-]*")
_SCHEME_CREDENTIAL = re.compile(
    r"\b(?P<scheme>[Bb]earer|BEARER|[Tt]oken|TOKEN|[Bb]asic|BASIC)\s+(?P<cred>[A-Za-z0-9._~+/-]+=*)"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~+=-]{20,}")
_ALNUM_RUNS = re.compile(r"[A-Za-z0-9]+")
_RULE_VAR = re.compile(
    r"<(?:(?P<converter>[A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>"
)
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can serialise
_Items = Iterable[tuple[str, object]] | Mapping[str, object]
#: a URL rule lined up for matching: its regex, and each variable's (name, converter)
_RulePattern = tuple[re.Pattern[str], tuple[tuple[str, str], ...]]


def _normalise(key: str) -> str:
    return _NOT_ALNUM.sub("", key.casefold())


def looks_random(text: str) -> bool:
    """Whether ``text`` (a path segment, a URL's user name) looks like a generated secret.

    20 or more URL-safe characters, not a UUID, whose runs of more than four letters and digits
    mixed together add up to 16 or more: ``token_hex``/``token_urlsafe`` output, hashes, API
    keys; not slugs of words and numbers (``how-to-deploy-flask-2024``, ``report_2024_Q3``).
    """
    if len(text) < 20 or not _TOKEN_CHARS.fullmatch(text) or _UUID.fullmatch(text):
        return False
    mixed = sum(
        len(run)
        for run in _ALNUM_RUNS.findall(text)
        if len(run) > 4 and not run.isdigit() and not run.isalpha()
    )
    return mixed >= 16


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


def _token(match: re.Match[str]) -> str:
    start = match.start()
    glued = start > 0 and match.string[start - 1].isalnum()  # a \b here would cost 4x
    return match.group() if glued else REDACTED


def _is_basic_credential(encoded: str) -> bool:
    """Whether ``encoded`` is base64 of ``user:password``, as HTTP Basic sends it."""
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    return ":" in text and text.isprintable()


def _scheme_credential(match: re.Match[str]) -> str:
    scheme, credential = match.group("scheme"), match.group("cred")
    kind = scheme.lower()
    if kind == "basic":
        secret = _is_basic_credential(credential)
    elif kind == "bearer":
        secret = len(credential) >= 8
    else:  # "Token abc": only when it looks like one, "token expired" is prose
        secret = len(credential) >= 16 and any(char.isdigit() for char in credential)
    return f"{scheme} {REDACTED}" if secret else match.group()


def _url_parts(match: re.Match[str]) -> str:
    """A URL with the password of its user info and its random-looking path segments redacted."""
    authority, path = match.group(1), match.group(2)
    head = match.string[match.start() : match.start(1)]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = f"{userinfo.split(':', 1)[0]}:{REDACTED}"
        elif looks_random(userinfo):
            userinfo = REDACTED
        authority = f"{userinfo}@{host}"
    return head + authority + _redact_segments(path)


def _redact_segments(path: str) -> str:
    return "/".join(REDACTED if looks_random(part) else part for part in path.split("/"))


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


def _rule_pattern(rule: str) -> _RulePattern:
    """``rule`` (werkzeug syntax) as a regex with one group per variable, ``v0``, ``v1``, ..."""
    regex: list[str] = []
    variables: list[tuple[str, str]] = []
    last = 0
    for match in _RULE_VAR.finditer(rule):
        converter = match.group("converter") or "default"
        regex.append(re.escape(rule[last : match.start()]))
        part = ".+?" if converter == "path" else "[^/]+"
        regex.append(f"(?P<v{len(variables)}>{part})")
        variables.append((match.group("name"), converter))
        last = match.end()
    regex.append(re.escape(rule[last:]))
    return re.compile("".join(regex)), tuple(variables)


class Redactor:
    """Scrubs request facts as the module docstring describes; thread-safe.

    Its only state besides the settings is the caches of key verdicts and rule patterns, whose
    entries never change once written.
    """

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
        fragments = sorted({*SUBSTRING_KEYS, *self.extra_keys}, key=len, reverse=True)
        self._substrings = re.compile("|".join(map(re.escape, fragments)))
        self.max_value_chars, self.max_depth, self.max_items = max_value_chars, max_depth, max_items
        self._verdicts: dict[str, bool] = {}
        self._rules: dict[str, _RulePattern] = {}

    def is_secret_key(self, key: str) -> bool:
        """Whether ``key`` names a secret, by the three rules in the module docstring."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._judge(key)
            if len(key) <= _KEY_CACHE_MAX_LEN:
                if len(self._verdicts) >= _KEY_CACHE_SIZE:
                    self._verdicts.clear()
                self._verdicts[key] = verdict
        return verdict

    def is_secret_header(self, name: str) -> bool:
        """Whether a header ``name`` is secret: by :meth:`is_secret_key`, or because a part of
        it (between ``-``, ``_`` or ``.``) ends with a word of :data:`WORD_KEYS`. Header names
        are case-insensitive and arrive case-folded or title-cased, so ``userPin`` is
        ``Userpin`` and camelCase cannot split it into words."""
        if self.is_secret_key(name):
            return True
        return any(part.endswith(_WORD_KEY_ENDS) for part in _HEADER_PARTS.split(name.lower()))

    def _judge(self, key: str) -> bool:
        normal = _normalise(key)
        if self._substrings.search(normal) or normal in _EXACT_SET:
            return True
        if normal in _NOT_SECRET_SET:
            return False
        return any(word.lower() in _WORD_SET for word in _WORDS.findall(key))

    def value(self, value: object) -> object:
        """One value with no key: strings scrubbed and cut; containers go to :meth:`json`."""
        if isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return self.json(value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return self._int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bytes, bytearray)):
            return f"[{len(value)} bytes]"
        if isinstance(value, memoryview):
            return f"[{value.nbytes} bytes]"
        return self.text(_safe_repr(value))

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
                out[self.text(key)] = REDACTED
            elif len(values) == 1:
                out[self.text(key)] = self.value(values[0])
            else:
                out[self.text(key)] = self._list(values, 0)
        return out

    def json(self, data: object) -> object:
        """A parsed JSON body: secret keys' subtrees redacted at any depth, scalars scrubbed."""
        return self._walk(data, 0)

    def headers(self, items: Iterable[tuple[str, str]], allowed: Collection[str]) -> dict[str, str]:
        """The ``allowed`` headers minus :data:`NEVER_STORED_HEADERS`, keyed by lower-case name,
        values scrubbed (a ``Referer``'s token parameters too); repeated headers are joined
        with ``", "``."""
        wanted = {name.lower() for name in allowed} - NEVER_STORED_HEADERS
        values: dict[str, list[str]] = {}
        secret: set[str] = set()
        for name, raw in items:
            lower = name.lower()
            if lower in wanted:
                values.setdefault(lower, []).append(raw)
                if self.is_secret_header(name):
                    secret.add(lower)
        return {
            name: REDACTED if name in secret else self.text(", ".join(raw))
            for name, raw in values.items()
        }

    def path(self, path: str, rule: str | None = None) -> str:
        """A request path lined up with its URL ``rule`` (when it matches), as the module
        docstring says; then scrubbed like any string."""
        match: re.Match[str] | None = None
        variables: tuple[tuple[str, str], ...] = ()
        if rule is not None and len(path) <= self.max_value_chars + SCAN_MARGIN:
            pattern, variables = self._rule(rule)
            match = pattern.fullmatch(path)
        if match is None:
            return self.text(_redact_segments(path))
        out, last = [], 0
        for index, (name, converter) in enumerate(variables):
            start, end = match.span(f"v{index}")
            out.append(path[last:start])
            part = path[start:end]
            if self.is_secret_key(name):
                out.append(REDACTED)
            else:
                out.append(part if converter in _SAFE_CONVERTERS else _redact_segments(part))
            last = end
        out.append(path[last:])
        return self.text("".join(out))

    def text(self, text: str) -> str:
        """``text`` scrubbed of secret-shaped values and cut to ``max_value_chars``."""
        limit = self.max_value_chars
        scanned = text[: limit + SCAN_MARGIN]
        out = self._scrub(scanned)
        if len(out) <= limit and len(scanned) == len(text):
            return out
        past = max(len(out) - limit, 0) + len(text) - len(scanned)
        return f"{out[:limit]}…[+{past} chars]"

    def _scrub(self, text: str) -> str:
        if len(text) < 4:
            return text
        if "-----BEGIN " in text:
            text = _PEM.sub(REDACTED, text)
        text = _TOKENS.sub(_token, text)
        if "://" in text:
            text = _URL.sub(_url_parts, text)
        text = _SCHEME_CREDENTIAL.sub(_scheme_credential, text)  # before "auth=Bearer t0k"
        text = self._pairs(_PAIR, _PAIR_VALUE, text)
        if '"' in text:
            text = self._pairs(_JSON_PAIR, _JSON_VALUE, text)
        return _mask_cards(text)

    def _pairs(self, pattern: re.Pattern[str], values: re.Pattern[str], text: str) -> str:
        """``text`` with the value (matched by ``values``) after each name ``pattern`` finds
        redacted when the name is secret."""
        out, last = [], 0
        for match in pattern.finditer(text):
            if match.start() < last or not self.is_secret_key(match.group("name")):
                continue
            value = values.match(text, match.end())
            if value is None:
                continue
            quote = '"' if value.group().startswith('"') else ""
            out.append(f"{text[last : match.end()]}{quote}{REDACTED}{quote}")
            last = value.end()
        out.append(text[last:])
        return "".join(out)

    def _rule(self, rule: str) -> _RulePattern:
        found = self._rules.get(rule)
        if found is None:
            found = _rule_pattern(rule)
            if len(self._rules) >= _RULE_CACHE_SIZE:
                self._rules.clear()
            self._rules[rule] = found
        return found

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
            out[self.text(name)] = REDACTED if secret else self._walk(item, depth + 1)
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
