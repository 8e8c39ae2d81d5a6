"""RFC 3339 timestamps as the contract and PostgreSQL both accept them.

Shared by row validation (both its fast and its thorough path) and by the extract header.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

_TS_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
# The common shape, which PostgreSQL reads exactly as parse_timestamp would (at most microseconds):
# the row-by-row validator returns such values as their original text (staging's binary COPY then makes
# them datetimes, gatewaydb/binary_copy.py).
PLAIN_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})\Z")


def parse_timestamp(value: str) -> datetime:
    """RFC 3339 -> aware datetime (Python 3.10's fromisoformat takes neither 'Z' nor 9 digits)."""
    m = _TS_RE.match(value)
    if not m:
        raise ValueError("not an RFC 3339 timestamp with a time zone")
    date, time_, frac, tz = m.groups()
    frac = (frac or "")[:7]  # '.' + at most microseconds
    tz = "+00:00" if tz in ("Z", "z") else tz
    return _in_pg_range(datetime.fromisoformat(f"{date}T{time_}{frac}{tz}"))


_MAX_OFFSET = timedelta(hours=15, minutes=59)  # PostgreSQL refuses larger time zone displacements


def _in_pg_range(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is not None and abs(offset) > _MAX_OFFSET:
        raise ValueError("time zone offset out of range (at most +/-15:59)")
    return value


_fromisoformat = datetime.fromisoformat


def plain_utc_timestamp(value: str) -> bool:
    """Whether ``value`` is ``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant (no 31 June, no hour 25).

    The common shape, so the cheapest check: the separators by position (a regex took twice as long;
    lookup tables of valid clock times were slower still, their memory out of cache), the digits and
    the calendar by fromisoformat, which reads ASCII digits only; sliced before the 'Z', which Python
    3.10's fromisoformat does not take.
    """
    if (len(value) != 20 or value[19] != "Z" or value[10] != "T" or value[4] != "-" or value[7] != "-"
            or value[13] != ":" or value[16] != ":"):
        return False
    try:
        _fromisoformat(value[:19])
    except ValueError:
        return False
    return True
