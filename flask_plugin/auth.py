"""Who may use the live dashboard, and proof that a form came from it.

:class:`Gate` decides each dashboard request: the app's ``authorize`` callable, then HTTP Basic
with ``FLAMEWATCH_USERNAME``/``FLAMEWATCH_PASSWORD`` (the password as given or as a werkzeug
password hash). There is no default password: with neither configured the dashboard refuses
every request (403, saying what to set), except in ``app.testing`` and, for loopback clients,
``app.debug``. Wrong credentials cost the address a failure; past :data:`FREE_FAILURES` it must
wait (429 with ``Retry-After``), twice as long after each further failure.

:class:`CsrfTokens` makes the token a state-changing form carries: an HMAC of the user's name,
so a token is worth nothing to another user and nothing to a page of another origin (which
cannot read it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response
from werkzeug.security import check_password_hash

from flamewatch.sampler.logs import log, log_swallowed

from .config import PREFIX, DashboardSettings

__all__ = ["FREE_FAILURES", "CsrfTokens", "FailureLimiter", "Gate", "is_password_hash"]

#: wrong passwords an address may try before it has to wait
FREE_FAILURES = 5
MAX_DELAY_S = 300
#: an address's failures are forgotten after this long without one
FORGET_AFTER_S = 3600.0
#: addresses remembered at most (the oldest are forgotten first): bounded memory
MAX_ADDRESSES = 10_000

REALM = "flamewatch"
_HASH = re.compile(r"(scrypt|pbkdf2):[^$]*\$[^$]+\$[0-9a-f]+")
#: verified credentials of hashed passwords are remembered this long, so that the browser's
#: every request (pages, assets, downloads) does not cost a deliberately slow hash
_VERIFIED_TTL_S = 300.0
_VERIFIED_MAX = 64

Clock = Callable[[], float]


def is_password_hash(password: str) -> bool:
    """Whether a configured password is a werkzeug hash (``generate_password_hash``)."""
    return _HASH.fullmatch(password) is not None


class FailureLimiter:
    """Per client address, failed logins and how long it must wait before the next try."""

    def __init__(self, clock: Clock = time.monotonic, max_addresses: int = MAX_ADDRESSES) -> None:
        self._clock = clock
        self._max = max_addresses
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # count, last
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> int:
        """Seconds ``address`` must wait before its credentials are checked again (0: now)."""
        with self._lock:
            entry = self._failures.get(address)
            if entry is None:
                return 0
            count, last = entry
            now = self._clock()
            if now - last > FORGET_AFTER_S:
                del self._failures[address]
                return 0
            if count < FREE_FAILURES:
                return 0
            delay = min(2.0 ** (count - FREE_FAILURES), MAX_DELAY_S)
            return max(0, math.ceil(last + delay - now))

    def failed(self, address: str) -> None:
        with self._lock:
            count, _ = self._failures.pop(address, (0, 0.0))
            self._failures[address] = (count + 1, self._clock())
            while len(self._failures) > self._max:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class Gate:
    """Decides who a dashboard request comes from, or answers it with 401/403/429."""

    def __init__(self, settings: DashboardSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.limiter = FailureLimiter(clock)
        self._clock = clock
        self._hashed = settings.password is not None and is_password_hash(settings.password)
        self._key = secrets.token_bytes(32)  # keys the memory of verified credentials
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, app: Flask, request: Request) -> str | Response:
        """The user's name ("" when not known), or the response refusing the request."""
        settings = self.settings
        if settings.authorize is not None:
            user = self._ask_app(request)
            if user is not None:
                return user
        if settings.username is not None:
            return self._basic(request)
        if settings.authorize is not None:
            return _refuse(403, "The app's FLAMEWATCH_AUTHORIZE callable refused this request.")
        if app.testing or (app.debug and _is_loopback(request.remote_addr)):
            return ""
        return _refuse(
            403,
            "The flamewatch dashboard has no authentication configured. Set"
            f" {PREFIX}USERNAME and {PREFIX}PASSWORD (the password may be a werkzeug password"
            f" hash), or {PREFIX}AUTHORIZE to a callable request -> bool that uses the app's"
            f" own login; or {PREFIX}DASHBOARD = False to turn the dashboard off.",
        )

    def _ask_app(self, request: Request) -> str | None:
        authorize = self.settings.authorize
        assert authorize is not None
        try:
            verdict: Any = authorize(request)
        except Exception:
            log_swallowed("the FLAMEWATCH_AUTHORIZE callable (the request is refused)")
            return None
        if isinstance(verdict, str):
            return verdict or None
        return "" if verdict else None

    def _basic(self, request: Request) -> str | Response:
        address = request.remote_addr or ""
        wait = self.limiter.retry_after(address)
        if wait:
            response = _refuse(429, "Too many failed logins from this address; try again later.")
            response.headers["Retry-After"] = str(wait)
            return response
        credentials = request.authorization
        if credentials is None or credentials.type != "basic":
            return _challenge()  # a browser's first request: not a failure
        username, password = credentials.username or "", credentials.password or ""
        if self._valid(username, password):
            self.limiter.succeeded(address)
            return username
        self.limiter.failed(address)
        log.warning("flamewatch: failed dashboard login from %s", address or "an unknown address")
        return _challenge()

    def _valid(self, username: str, password: str) -> bool:
        expected_user, expected_password = self.settings.username, self.settings.password
        assert expected_user is not None
        assert expected_password is not None
        if self._hashed and self._remembered(username, password):
            return True
        user_ok = hmac.compare_digest(_bytes(username), _bytes(expected_user))
        if self._hashed:
            password_ok = check_password_hash(expected_password, password)
        else:
            password_ok = hmac.compare_digest(_bytes(password), _bytes(expected_password))
        if user_ok and password_ok and self._hashed:
            self._remember(username, password)
        return user_ok and password_ok

    def _digest(self, username: str, password: str) -> bytes:
        message = _bytes(username) + b"\x00" + _bytes(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remembered(self, username: str, password: str) -> bool:
        digest = self._digest(username, password)
        with self._lock:
            since = self._verified.get(digest)
            return since is not None and self._clock() - since < _VERIFIED_TTL_S

    def _remember(self, username: str, password: str) -> None:
        with self._lock:
            self._verified[self._digest(username, password)] = self._clock()
            while len(self._verified) > _VERIFIED_MAX:
                self._verified.popitem(last=False)


class CsrfTokens:
    """Tokens bound to a user: HMAC-SHA256 of the user's name under a secret key.

    The key comes from ``FLAMEWATCH_SECRET_KEY``, else from ``app.secret_key``, else it is
    random per process -- then a form served by one worker process is refused by another, so
    an app with several processes sets one of the first two.
    """

    def __init__(self, secret_key: str | None) -> None:
        self._configured = secret_key
        self._random = secrets.token_bytes(32)

    def _key(self, app: Flask) -> bytes:
        secret: str | bytes | None = self._configured or app.secret_key or None
        if secret is None:
            return self._random
        raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
        return hashlib.sha256(b"flamewatch csrf\x00" + raw).digest()  # not the app's key itself

    def token(self, app: Flask, user: str) -> str:
        return hmac.new(self._key(app), _bytes(user), hashlib.sha256).hexdigest()

    def valid(self, app: Flask, user: str, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(_bytes(token), _bytes(self.token(app, user)))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or ip).is_loopback


def _refuse(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _challenge() -> Response:
    response = _refuse(401, "Log in to the flamewatch dashboard.")
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response
