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
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (event_key, event_id, entity_type, entity_id, event_type, event_ts, payload) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (event_key) DO NOTHING"
                ).format(sync_table(schema, "inbox")),
                [(e.event_key, e.event_id, e.entity_type, e.entity_id, e.event_type, e.timestamp, e.payload_json())
                 for e in events],
                returning=False,
            )
            return cur.rowcount if cur.rowcount >= 0 else 0


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
