"""Strict reading of a werkzeug password hash given as ``FLAMEWATCH_PASSWORD``.

A value that starts like a hash (``scrypt:``, ``scrypt$``, ``pbkdf2:``, ``pbkdf2$``, in any
case, after any white space) must be exactly what ``werkzeug.security.generate_password_hash``
writes; anything else in that shape is refused. A loose reading would take a damaged hash -- a
trailing newline from a file, hex turned upper-case -- as a plain password, and then the hash
string itself would log in.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["check_password_setting", "is_password_hash"]

_LOOKS_LIKE_HASH = re.compile(r"\s*(scrypt|pbkdf2)[:$]", re.IGNORECASE)
_SCRYPT = re.compile(
    r"scrypt(?::([1-9][0-9]*):([1-9][0-9]*):([1-9][0-9]*))?\$([A-Za-z0-9]+)\$([0-9a-f]+)"
)
_PBKDF2 = re.compile(r"pbkdf2(?::([a-z0-9_]+)(?::([1-9][0-9]*))?)?\$([A-Za-z0-9]+)\$([0-9a-f]+)")
_SCRYPT_HEX_LENGTH = 128  # hashlib.scrypt's default dklen, 64 bytes
#: memory one scrypt check may take (werkzeug asks for 132 * n * r * p bytes)
_SCRYPT_MAX_MEMORY = 1 << 30
_SCRYPT_MAX_P = 16


def is_password_hash(password: str) -> bool:
    """Whether a configured (already checked) password is a werkzeug hash."""
    return _LOOKS_LIKE_HASH.match(password) is not None


def check_password_setting(password: str) -> None:
    """Raise ``ValueError`` saying what is wrong if ``password`` looks like a hash but is not one
    that ``generate_password_hash`` writes; a plain password passes unchanged."""
    if not is_password_hash(password):
        return
    if password != password.strip():
        raise ValueError(
            "it looks like a werkzeug password hash but has white space around it (a newline"
            " read from a file?); remove it"
        )
    method = password.split("$", 1)[0].split(":", 1)[0]
    if method not in ("scrypt", "pbkdf2"):
        raise ValueError(f"the hash method is {method!r}; werkzeug writes 'scrypt' or 'pbkdf2'")
    if method == "scrypt":
        _check_scrypt(password)
    else:
        _check_pbkdf2(password)


def _check_scrypt(password: str) -> None:
    match = _SCRYPT.fullmatch(password)
    if match is None:
        raise ValueError(_malformed("scrypt:N:r:p$salt$<128 lower-case hex digits>"))
    n, r, p = (int(part) for part in match.group(1, 2, 3)) if match[1] else (2**15, 8, 1)
    if n < 2 or n & (n - 1) or p > _SCRYPT_MAX_P or 132 * n * r * p > _SCRYPT_MAX_MEMORY:
        raise ValueError(
            f"its scrypt parameters n={n}, r={r}, p={p} are not usable: n must be a power of"
            f" two and one check may take at most {_SCRYPT_MAX_MEMORY >> 20} MiB"
            f" (132 * n * r * p bytes), p at most {_SCRYPT_MAX_P}"
        )
    if len(match[5]) != _SCRYPT_HEX_LENGTH:
        raise ValueError(_malformed("scrypt:N:r:p$salt$<128 lower-case hex digits>"))


def _check_pbkdf2(password: str) -> None:
    match = _PBKDF2.fullmatch(password)
    if match is None:
        raise ValueError(_malformed("pbkdf2:sha256:iterations$salt$<lower-case hex digits>"))
    name = match[1] or "sha256"
    try:
        digest_size = hashlib.new(name).digest_size
    except (ValueError, TypeError):
        raise ValueError(f"its digest {name!r} is not one hashlib knows") from None
    if len(match[4]) != 2 * digest_size:
        raise ValueError(
            _malformed(f"pbkdf2:{name}:iterations$salt$<{2 * digest_size} lower-case hex digits>")
        )


def _malformed(shape: str) -> str:
    return (
        f"it looks like a werkzeug password hash but is not of the form {shape}; copy the"
        " whole output of werkzeug.security.generate_password_hash, unchanged"
    )
