"""Who may use the live dashboard, and proof that a form came from it.

:class:`Gate` decides each dashboard request: the app's ``authorize`` callable, then HTTP Basic
with ``FLAMEWATCH_USERNAME``/``FLAMEWATCH_PASSWORD`` (the password as given or as a werkzeug
password hash). There is no default password: with neither configured the dashboard refuses
every request (403, saying what to set), except in ``app.testing`` and, for loopback clients,
``app.debug``.

Wrong credentials are throttled by :class:`LoginLimiter` (per network and user name, then per
user name), password hash checks by :class:`HashBudget` (a few per second, one at a time), and
their log lines by :class:`FailureLog`; docs/dashboard-security.md says what an attacker can and
cannot do against them, and what the admin sees.

:class:`CsrfTokens` makes the token a state-changing form carries: an HMAC of the user's name,
so a token is worth nothing to another user and nothing to a page of another origin (which
cannot read it).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from flask import Flask, Request, Response
from werkzeug.security import check_password_hash

from flamewatch.sampler.logs import log, log_swallowed

from .config import PREFIX, Settings
from .password_hash import is_password_hash

__all__ = [
    "FREE_FAILURES",
    "USER_FREE_FAILURES",
    "CsrfTokens",
    "FailureLog",
    "Gate",
    "HashBudget",
    "LoginLimiter",
    "is_password_hash",
    "network_of",
]

#: wrong passwords a network may try for one user name before it has to wait
FREE_FAILURES = 5
#: wrong passwords for one user name, from every network together, before the networks that
#: failed for it have to wait (the networks that have not failed are still checked)
USER_FREE_FAILURES = 10
MAX_DELAY_S = 300
#: a failure is forgotten after this long without another of the same kind
FORGET_AFTER_S = 3600.0
#: records kept per kind at most (the oldest are forgotten first): bounded memory
MAX_ENTRIES = 10_000
#: password hash checks per second (and at once) for each of the two classes of client:
#: networks without a failure on record, and networks with one
HASH_CHECKS_PER_S = 2.0
HASH_BURST = 4
#: how long a check of the clean class waits for the one running
CLEAN_WAIT_S = 2.0
#: at most one failed-login line per this many seconds; the next one counts the rest
LOG_INTERVAL_S = 60.0
#: an IPv6 client is known by its /64: one host usually has a whole /64 to pick addresses from
IPV6_NETWORK_BITS = 64

REALM = "flamewatch"
#: verified credentials are remembered this long after their last use, so that the browser's
#: every request (pages, assets, downloads) costs no deliberately slow hash, and a logged-in
#: admin is not locked out by someone else's failures on the same network
_VERIFIED_TTL_S = 300.0
_VERIFIED_MAX = 64

Clock = Callable[[], float]


def network_of(address: str) -> str:
    """The network a client address is counted by: the address itself for IPv4 (also when
    mapped into IPv6), its /64 for IPv6; anything else (a Unix socket) as given, cut short."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_NETWORK_BITS), strict=False))
    return str(ip)


class _Failures:
    """Failure counts by key, each with the time of its last failure; bounded and forgetful."""

    def __init__(self, clock: Clock, max_entries: int) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()  # count, last

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, key: Hashable) -> tuple[int, float]:
        """(failures, time of the last), (0, 0.0) once forgotten."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[1] > FORGET_AFTER_S:
            del self._entries[key]
            entry = None
        return entry or (0, 0.0)

    def wait(self, key: Hashable, free: int) -> int:
        """Seconds until ``key`` may try again: none for its first ``free`` failures, then 1 s
        doubling with each further failure, at most :data:`MAX_DELAY_S`."""
        count, last = self.count(key)
        if count < free:
            return 0
        delay = min(2.0 ** min(count - free, 16), MAX_DELAY_S)  # no float overflow, ever
        return max(0, math.ceil(last + delay - self._clock()))

    def add(self, key: Hashable) -> None:
        count, _ = self.count(key)  # a forgotten count starts again from 0
        self._entries.pop(key, None)
        self._entries[key] = (count + 1, self._clock())
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)


class LoginLimiter:
    """Failed logins per (network, user name), per user name and per network.

    * A network that failed :data:`FREE_FAILURES` times for a user name waits before its next
      try for that name: 1 s, doubling with each further failure, at most 5 minutes.
    * A user name that failed :data:`USER_FREE_FAILURES` times from all networks together makes
      every network that failed for it wait as long (a guessing spread over many addresses),
      while a network that has not failed for it is still checked at once: the admin, from
      their own network, is not locked out by the guesses of others.
    * The per-network count only decides which hash budget a client draws from
      (:class:`HashBudget`): it never refuses a request by itself, so the clients behind one
      proxy cannot lock each other out by trying other user names.

    A success forgets the network's failures for that name (not the user name's: the others'
    guessing goes on). User names are kept as keyed digests, never as given.
    """

    def __init__(self, clock: Clock = time.monotonic, max_entries: int = MAX_ENTRIES) -> None:
        self._pairs = _Failures(clock, max_entries)
        self._users = _Failures(clock, max_entries)
        self._networks = _Failures(clock, max_entries)
        self._key = secrets.token_bytes(16)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Failure records held, of every kind."""
        return len(self._pairs) + len(self._users) + len(self._networks)

    def _user(self, user: str) -> bytes:
        return hashlib.blake2b(_bytes(user), key=self._key, digest_size=16).digest()

    def retry_after(self, network: str, user: str) -> int:
        """Seconds before ``user``'s credentials from ``network`` are checked again (0: now)."""
        name = self._user(user)
        pair = (network, name)
        with self._lock:
            wait = self._pairs.wait(pair, FREE_FAILURES)
            if wait or self._pairs.count(pair)[0] == 0:
                return wait
            return self._users.wait(name, USER_FREE_FAILURES)

    def has_failed(self, network: str) -> bool:
        """Whether ``network`` has a failed login on record, for any user name."""
        with self._lock:
            return self._networks.count(network)[0] > 0

    def failed(self, network: str, user: str) -> None:
        name = self._user(user)
        with self._lock:
            self._pairs.add((network, name))
            self._users.add(name)
            self._networks.add(network)

    def succeeded(self, network: str, user: str) -> None:
        with self._lock:
            self._pairs.forget((network, self._user(user)))
            self._networks.forget(network)


class _TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self._rate, self._burst, self._clock = rate, float(burst), clock
        self._tokens, self._since = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._since) * self._rate)
        self._since = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class HashBudget:
    """How many deliberately slow password hash checks unauthenticated clients may cause.

    Two token buckets of :data:`HASH_CHECKS_PER_S` checks a second (bursts of
    :data:`HASH_BURST`): one for networks with no failed login on record, one for the others,
    so that a client that keeps guessing spends its own bucket, not the admin's. And one check
    at a time: a check asked for while another runs is refused, never queued, so that waiting
    requests do not hold the server's threads. Remembered credentials cost no check.
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        rate: float = HASH_CHECKS_PER_S,
        burst: int = HASH_BURST,
    ) -> None:
        self._clean = _TokenBucket(rate, burst, clock)
        self._suspect = _TokenBucket(rate, burst, clock)
        self._lock = threading.Lock()  # the buckets
        self._running = threading.Lock()  # held while a check runs
        self.checks = 0  # done so far, for tests and curiosity

    def run(self, suspect: bool, check: Callable[[], bool]) -> bool | None:
        """``check()``'s verdict, or None when the budget has none to spare now."""
        with self._lock:
            if not (self._suspect if suspect else self._clean).take():
                return None
        # a client of the clean class waits for a running check (its bucket bounds how many
        # wait); one of the suspect class never does
        running = self._running
        if not (
            running.acquire(blocking=False) if suspect else running.acquire(True, CLEAN_WAIT_S)
        ):
            return None
        try:
            with self._lock:
                self.checks += 1
            return check()
        finally:
            self._running.release()


class FailureLog:
    """Failed logins on the ``flamewatch`` logger: at most one WARNING per
    :data:`LOG_INTERVAL_S`, which counts the failures and refusals not logged since."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._last: float | None = None
        self._failed = 0
        self._refused = 0
        self._lock = threading.Lock()

    def refused(self) -> None:
        with self._lock:
            self._refused += 1

    def failed(self, user: str, address: str) -> None:
        self._log(f"failed dashboard login as {_shown(user)}", address)

    def failed_token(self, address: str) -> None:
        """A wrong metrics bearer token (never shown: not even a wrong one is logged)."""
        self._log("wrong metrics token", address)

    def _log(self, what: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < LOG_INTERVAL_S:
                self._failed += 1
                return
            self._last = now
            failed, refused, self._failed, self._refused = self._failed, self._refused, 0, 0
        since = ""
        if failed or refused:
            since = f" ({failed} more failed and {refused} refused since the last such line)"
        log.warning(
            "flamewatch: %s from %s%s",
            what,
            _shown(address) if address else "an unknown address",
            since,
        )


class Gate:
    """Decides who a dashboard request comes from, or answers it with 401/403/429."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock = time.monotonic,
        budget: HashBudget | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = LoginLimiter(clock)
        self.budget = budget or HashBudget(clock)
        self.failure_log = FailureLog(clock)
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
        credentials = request.authorization
        if credentials is None or credentials.type != "basic":
            return _challenge()  # a browser's first request: not a failure
        username, password = credentials.username or "", credentials.password or ""
        if self._remembered(username, password):
            return username  # verified a moment ago: no hash, no limit
        address = request.remote_addr or ""
        network = network_of(address)
        wait = self.limiter.retry_after(network, username)
        if wait:
            self.failure_log.refused()
            return _too_many(wait, "Too many failed logins for this user from your network.")
        verdict = self._valid(network, username, password)
        if verdict is None:
            self.failure_log.refused()
            return _too_many(1, "The dashboard is checking other logins right now.")
        if verdict:
            self.limiter.succeeded(network, username)
            self._remember(username, password)
            return username
        self.limiter.failed(network, username)
        self.failure_log.failed(username, address)
        return _challenge()

    def _valid(self, network: str, username: str, password: str) -> bool | None:
        """Whether the credentials are right; None when the hash budget cannot check now."""
        expected_user, expected_password = self.settings.username, self.settings.password
        assert expected_user is not None
        assert expected_password is not None
        user_ok = hmac.compare_digest(_bytes(username), _bytes(expected_user))
        if not self._hashed:
            return hmac.compare_digest(_bytes(password), _bytes(expected_password)) and user_ok
        # the hash is checked for a wrong user name too: the time taken tells nothing
        password_ok = self.budget.run(
            self.limiter.has_failed(network),
            lambda: check_password_hash(expected_password, password),
        )
        return None if password_ok is None else password_ok and user_ok

    def _digest(self, username: str, password: str) -> bytes:
        message = _bytes(username) + b"\x00" + _bytes(password)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _remembered(self, username: str, password: str) -> bool:
        digest = self._digest(username, password)
        with self._lock:
            since = self._verified.get(digest)
            if since is None or self._clock() - since >= _VERIFIED_TTL_S:
                return False
            self._verified[digest] = self._clock()  # in use: remembered for longer
            self._verified.move_to_end(digest)
            return True

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


def _too_many(wait: int, why: str) -> Response:
    response = _refuse(429, f"{why} Try again in {wait} s.")
    response.headers["Retry-After"] = str(wait)
    return response


def _shown(text: str) -> str:
    """A client's text as a log line may show it: quoted, escaped, at most 64 characters."""
    return repr(text[:64]) + ("..." if len(text) > 64 else "")


def _challenge() -> Response:
    response = _refuse(401, "Log in to the flamewatch dashboard.")
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response
