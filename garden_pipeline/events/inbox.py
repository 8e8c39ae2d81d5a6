"""The inbox: every accepted event is a row here before the pusher hears 200.

Duplicates (same event_id, or the same natural key when there is none) are
stored once: the insert does nothing on conflict, and the pusher still gets
200, which is what an at-least-once sender needs.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from garden_pipeline.events.envelope import ValidEvent
from garden_pipeline.gatewaydb.sql import sync_table


def store(conn: psycopg.Connection, schema: str, events: list[ValidEvent]) -> int:
    """Insert ``events`` in one transaction; returns how many were new (the rest were duplicates)."""
    return sum(store_each(conn, schema, events))


def store_each(conn: psycopg.Connection, schema: str, events: list[ValidEvent]) -> list[bool]:
    """Insert ``events`` in one transaction (one statement); per event, True if it was new.

    An event repeated within ``events`` is new once, at its first place.
    """
    if not events:
        return []
    with conn.transaction():
        stored = {key for (key,) in conn.execute(
            sql.SQL(
                "INSERT INTO {} (event_key, event_id, entity_type, entity_id, event_type, event_ts, payload) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::timestamptz[], %s::text[]::jsonb[]) ON CONFLICT (event_key) DO NOTHING RETURNING event_key"
            ).format(sync_table(schema, "inbox")),
            [list(column) for column in zip(*(
                (e.event_key, e.event_id, e.entity_type, e.entity_id, e.event_type, e.timestamp, e.payload_json())
                for e in events))],
        ).fetchall()}
    new = []
    for e in events:
        new.append(e.event_key in stored)
        stored.discard(e.event_key)
    return new


def backlog(conn: psycopg.Connection, schema: str) -> dict:
    """Counts per state and the age of the oldest pending event (for health and metrics)."""
    rows = conn.execute(
        sql.SQL("SELECT state, count(*), min(received_at) FROM {} WHERE state IN ('pending', 'parked', "
                "'dead_lettered') GROUP BY state").format(sync_table(schema, "inbox"))
    ).fetchall()
    out: dict = {"pending": 0, "parked": 0, "dead_lettered": 0, "oldest_pending": None}
    for state, n, oldest in rows:
        out[state] = n
        if state == "pending":
            out["oldest_pending"] = oldest.isoformat() if isinstance(oldest, datetime) else None
    return out
