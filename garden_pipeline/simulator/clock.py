"""Time for the simulator: a strictly increasing UTC clock and RFC 3339 helpers."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MICROSECOND = timedelta(microseconds=1)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class MonotonicClock:
    """Wraps a clock so it never returns the same or an earlier instant twice.

    Event timestamps order changes of one entity and ``generated_at`` is used as
    the next ``updated_since`` watermark, so two readings must never tie even
    when the wall clock is coarse or steps back.
    """

    def __init__(self, source: Callable[[], datetime] | None = None):
        self._source = source or utc_now
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            t = as_utc(self._source())
            if self._last is not None and t <= self._last:
                t = self._last + _ONE_MICROSECOND
            self._last = t
            return t


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with microseconds and 'Z', as events carry them."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_epoch_seconds(seconds: int) -> str:
    """RFC 3339 UTC with whole seconds and 'Z', as generated base rows carry them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; raise ValueError with a readable reason."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected an RFC 3339 timestamp such as 2025-07-15T14:20:00Z, got an empty value")
    raw = text.strip()
    if len(raw) < 20 or raw[10] not in "Tt ":
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp (expected e.g. 2025-07-15T14:20:00Z)")
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1] in "Zz" else raw)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp (expected e.g. 2025-07-15T14:20:00Z)") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; RFC 3339 needs one, e.g. 'Z' or '+00:00'")
    return value.astimezone(timezone.utc)


def to_micros(value: datetime) -> int:
    """Exact integer microseconds since the epoch (floats lose the last digit)."""
    return (as_utc(value) - EPOCH) // _ONE_MICROSECOND
