"""Helpers for the event-path tests: a real receiver over HTTP, inbox inspection, applying batches."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg

from garden_pipeline.events.receiver import PREFIX, ReceiverSettings, create_receiver
from garden_pipeline.events.signature import HEADER, sign
from garden_pipeline.gatewaydb.apply_events import apply_inbox_batch
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.serving import BackgroundServer


def start_receiver(pg_url: str, schema: str, secrets: list[str] | None = None, max_batch: int = 500):
    app = create_receiver(ReceiverSettings(pg_url, schema, secrets or [], max_batch, pool_min=1, pool_max=4))
    return BackgroundServer(app, name="events receiver").start()


def post(url: str, payload, secret: str | None = None, path: str = "/events", headers: dict | None = None,
         t: int | None = None) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    if secret:
        h[HEADER] = sign(secret, body, t)
    return httpx.post(url + PREFIX + path, content=body, headers=h, timeout=30)


def inbox_rows(conn: psycopg.Connection, schema: str) -> list[tuple]:
    return conn.execute(
        f'SELECT id, event_key, entity_type, entity_id, event_type, state, state_reason FROM "{schema}_sync".inbox '
        "ORDER BY id").fetchall()


def apply(pg_url: str, schema: str, **kwargs):
    with connect(pg_url, autocommit=True) as conn:
        return apply_inbox_batch(conn, schema, run_id=f"test-{uuid.uuid4().hex[:8]}", **kwargs)


def event(event_type: str, entity_type: str, entity_id: str, ts: str, payload: dict | None = None, **extra) -> dict:
    return {"event_type": event_type, "entity_type": entity_type, "entity_id": entity_id, "timestamp": ts,
            "version": "1.0", "payload": payload if payload is not None else {}, **extra}


def project(pid: str, name: str, ts: str) -> dict:
    return {"id": pid, "project_name": name, "project_code": name.upper().replace(" ", "_"),
            "created_time": "2025-01-01T00:00:00Z", "updated_time": ts}


def use_case(uid: str, pid: str, ts: str, status: str = "active") -> dict:
    return {"id": uid, "project_id": pid, "use_case_name": f"uc {uid}", "use_case_code": uid.upper(),
            "description": None, "status": status, "created_time": "2025-01-01T00:00:00Z", "updated_time": ts}


def push_via_receiver(pg_url: str, schema: str, events: list[dict], secret: str | None = None) -> list:
    """POST ``events`` one by one to a real receiver over HTTP; returns the responses."""
    from garden_pipeline.simulator import EventPusher

    receiver = start_receiver(pg_url, schema, secrets=[secret] if secret else None)
    try:
        return EventPusher(receiver.url + "/api/v1/model-garden/events", secret=secret).push(events)
    finally:
        receiver.stop()
