"""Who may read ``/metrics``: the dashboard's own users, or a scraper with a bearer token.

A Prometheus server cannot log in through the app's login page (``FLAMEWATCH_AUTHORIZE``) and
should not hold the dashboard's password, so ``FLAMEWATCH_METRICS_TOKEN`` gives it a secret of
its own, good for the metrics and nothing else, sent as ``Authorization: Bearer <token>``
(Prometheus' ``authorization: {credentials_file: ...}``).

The token is compared in constant time (SHA-256 digests of both sides, so not even its length
shows), never logged, never shown in an error. Wrong tokens are limited like wrong passwords
(:class:`~.auth.LoginLimiter`: back-off per network after a few failures, 429 meanwhile) and
logged like them (:class:`~.auth.FailureLog`: at most a line a minute).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Flask, Request, Response

from .auth import Clock, Gate, LoginLimiter, network_of
from .config import PREFIX

__all__ = ["MetricsGate", "bearer_token"]

#: what the limiter counts wrong tokens under (user names are never this: it is not a name
#: the limiter shares with Basic logins, which have a limiter of their own)
_TOKEN_USER = "metrics token"


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, None when there is none."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class MetricsGate:
    """Decides each request for ``/metrics``: a bearer token when one is sent and a token is
    configured, else the dashboard's :class:`~.auth.Gate`."""

    def __init__(self, gate: Gate, clock: Clock = time.monotonic) -> None:
        self.gate = gate
        token = gate.settings.metrics_token
        self._expected = None if token is None else _digest(token)
        self.limiter = LoginLimiter(clock)

    def check(self, app: Flask, request: Request) -> str | Response:
        """The user's name (``""`` for a scraper), or the response refusing the request."""
        expected = self._expected
        sent = bearer_token(request) if expected is not None else None
        if sent is None:
            verdict = self.gate.check(app, request)
            if expected is not None and isinstance(verdict, Response):
                return _challenge_too(verdict)
            return verdict
        assert expected is not None
        address = request.remote_addr or ""
        network = network_of(address)
        wait = self.limiter.retry_after(network, _TOKEN_USER)
        if wait:
            self.gate.failure_log.refused()
            refused = _refuse(
                429, f"Too many wrong metrics tokens from your network. Try again in {wait} s."
            )
            refused.headers["Retry-After"] = str(wait)
            return refused
        if hmac.compare_digest(_digest(sent), expected):
            self.limiter.succeeded(network, _TOKEN_USER)
            return ""
        self.limiter.failed(network, _TOKEN_USER)
        self.gate.failure_log.failed_token(address)
        return _bearer_challenge(
            f"Wrong metrics token: send the value of {PREFIX}METRICS_TOKEN as"
            " 'Authorization: Bearer <token>'.",
            error=True,
        )


def _refuse(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")


def _bearer_challenge(message: str, *, error: bool = False) -> Response:
    response = _refuse(401, message)
    challenge = 'Bearer realm="flamewatch"'
    if error:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _challenge_too(refusal: Response) -> Response:
    """The dashboard gate's refusal, telling a scraper it may send the token instead: a 401
    gets a Bearer challenge next to the Basic one; a 403 (no login of the dashboard's own
    configured, or the app's callable refused) becomes a 401 asking for the token."""
    if refusal.status_code == 401:
        refusal.headers.add("WWW-Authenticate", 'Bearer realm="flamewatch"')
        return refusal
    if refusal.status_code == 403:
        return _bearer_challenge(
            f"Send the value of {PREFIX}METRICS_TOKEN as 'Authorization: Bearer <token>'."
        )
    return refusal
