"""Signing and checking pushed Model Garden events (contract section 3).

Header: ``X-Garden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
The pure functions here are shared by the simulator (which signs) and the
event receiver (which verifies). Error messages never contain a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import string
import time

HEADER = "X-Garden-Signature"
DEFAULT_TOLERANCE = 300  # seconds, contract section 3

_HEX = frozenset(string.hexdigits)


class SignatureError(ValueError):
    """A pushed event's signature is missing, malformed, stale or wrong."""


def _digest(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """Return the ``X-Garden-Signature`` header value for ``body`` signed now (or at ``t``)."""
    if not secret:
        raise ValueError("cannot sign with an empty secret")
    if isinstance(body, str):
        body = body.encode("utf-8")
    t = int(time.time()) if t is None else int(t)
    return f"t={t},v1={_digest(secret, t, body)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {HEADER} header: expected 't=<unix seconds>,v1=<hex>'")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"malformed {HEADER} header: t={value[:20]!r} is not unix seconds") from None
        elif key == "v1":
            # Several v1 entries are allowed so a sender can sign with an old and a new secret.
            signatures.append(value.lower())
        # Unknown schemes (v0, v2, ...) are ignored, so a future scheme can be added alongside v1.
    if timestamp is None:
        raise SignatureError(f"malformed {HEADER} header: no t=<unix seconds>")
    if not signatures:
        raise SignatureError(f"malformed {HEADER} header: no v1=<hex signature>")
    return timestamp, signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: list[str],
    now: int | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return if ``header`` signs ``body`` with any of ``secrets`` within ``tolerance`` s of now.

    Raise :class:`SignatureError` otherwise. Accepting several secrets lets a
    secret be rotated without refusing events signed with the previous one.
    """
    if isinstance(secrets, str):  # one secret passed bare: not a list of its characters
        secrets = [secrets]
    usable = [s for s in secrets if s]
    if not usable:
        raise SignatureError("no signing secret is configured to verify against")
    if not header or not header.strip():
        raise SignatureError(f"missing {HEADER} header")
    if isinstance(body, str):
        body = body.encode("utf-8")
    t, candidates = _parse(header)
    now = int(time.time()) if now is None else int(now)
    skew = now - t
    if abs(skew) > tolerance:
        direction = "old" if skew > 0 else "in the future"
        raise SignatureError(f"signature timestamp is {abs(skew)} s {direction} (tolerance {tolerance} s)")
    # compare_digest only takes ASCII str; a non-hex value cannot match anyway.
    candidates = [c for c in candidates if c and _HEX.issuperset(c)]
    matched = False
    for secret in usable:
        expected = _digest(secret, t, body)
        for candidate in candidates:
            # No early exit: every comparison runs so timing says nothing about which secret matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature does not match the body with any configured secret")
