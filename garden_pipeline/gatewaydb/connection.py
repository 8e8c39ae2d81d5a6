"""Connections to GatewayDB: URL forms for psycopg and SQLAlchemy, and advisory-lock keys."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

import psycopg

_DRIVER_RE = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://…`` or ``postgres://…`` -> a URL libpq accepts."""
    if not _DRIVER_RE.match(url):
        raise ValueError(f"GATEWAY_DB_URL must start with postgresql:// (got a URL with scheme {url.split(':', 1)[0]!r})")
    return _DRIVER_RE.sub("postgresql://", url, count=1)


def sqlalchemy_url(url: str) -> str:
    return _DRIVER_RE.sub("postgresql+psycopg://", libpq_url(url), count=1)


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


# JIT off for our sessions: the merge statements read fresh staging and temp tables without statistics,
# whose cost estimates pass jit_above_cost, and compiling cost 0.3-0.4 s per statement (measured with
# auto_explain) for statements that then run in less. work_mem 64MB: with the default 4MB, the hash joins of
# a 450k-row entity against its table and its parents spilled to disk in batches (0.8-1.1 s each where
# they fit in memory in ~0.3 s); one sync runs at a time, so this is a bounded amount of server memory.
# The gateway's own sessions keep the server defaults.
_SESSION_OPTIONS = "-c jit=off -c work_mem=64MB"


def connect(url: str, **kwargs) -> psycopg.Connection:
    kwargs["options"] = " ".join(filter(None, (_SESSION_OPTIONS, kwargs.get("options"))))
    try:
        return psycopg.connect(libpq_url(url), **kwargs)
    except psycopg.OperationalError as exc:
        # libpq's message can echo the connection string; keep the password out of it.
        raise psycopg.OperationalError(f"cannot connect to GatewayDB at {redact(url)}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock from names."""
    digest = hashlib.blake2b("/".join(("garden_pipeline", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
