"""The completion-event outbox: a sync.completed entry is recorded in GatewayDB first.

Recording the event in the database (rather than publishing straight to
Redis) is what makes delivery survive a Redis outage: the relay publishes
whatever is pending, and only runs whose writes committed ever get a row.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from garden_pipeline.gatewaydb.sql import sync_table

EVENT_TYPE = "sync.completed"


def rfc3339(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def event_id_for(run_id: str) -> str:
    # Deterministic per run, so a retried final step cannot enqueue a second event for the same run.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"garden_pipeline/sync.completed/{run_id}"))


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    fields: dict[str, str]


def enqueue_completion(
    conn: psycopg.Connection,
    schema: str,
    run_id: str,
    mode: str,
    counts: dict[str, dict[str, int]],
    watermark: datetime | None,
) -> tuple[str, bool]:
    """Record the run's sync.completed event; returns (event_id, newly_created)."""
    event_id = event_id_for(run_id)
    fields = {
        "type": EVENT_TYPE,
        "event_id": event_id,
        "run_id": run_id,
        "mode": mode,
        "counts": json.dumps(counts, sort_keys=True),
        "watermark": rfc3339(watermark),
        "completed_at": rfc3339(datetime.now(timezone.utc)),
    }
    with conn.transaction():
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {} (event_id, run_id, mode, fields) VALUES (%s, %s, %s, %s::jsonb) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ).format(sync_table(schema, "outbox")),
            (event_id, run_id, mode, json.dumps(fields)),
        ).fetchone()
    return event_id, row is not None


def pending(conn: psycopg.Connection, schema: str, limit: int = 100) -> list[PendingEvent]:
    rows = conn.execute(
        sql.SQL("SELECT event_id, fields FROM {} WHERE published_at IS NULL ORDER BY created_at LIMIT %s").format(
            sync_table(schema, "outbox")
        ),
        (limit,),
    ).fetchall()
    return [PendingEvent(eid, {k: str(v) for k, v in fields.items()}) for eid, fields in rows]


def mark_published(conn: psycopg.Connection, schema: str, event_id: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET published_at = now(), attempts = attempts + 1, last_error = NULL "
                    "WHERE event_id = %s").format(sync_table(schema, "outbox")),
            (event_id,),
        )


def mark_failed(conn: psycopg.Connection, schema: str, event_id: str, error: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET attempts = attempts + 1, last_error = %s WHERE event_id = %s").format(
                sync_table(schema, "outbox")
            ),
            (error[:500], event_id),
        )
