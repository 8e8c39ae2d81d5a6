"""Contract-shaped CUD events (contract section 3) as the simulator emits them."""

from __future__ import annotations

import uuid

EVENT_VERSION = "1.0"
EVENT_TYPES = ("CREATED", "UPDATED", "DELETED")


def change_event(event_type: str, entity_type: str, entity_id: str, timestamp: str, payload: dict) -> dict:
    """One event; ``payload`` is the whole entity, or ``{"id": ...}`` for DELETED."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"event_type must be one of {EVENT_TYPES}, got {event_type!r}")
    return {
        # Random, not derived from the seed: two simulator runs must never reuse an
        # idempotency key for a different change.
        "event_id": f"evt-{uuid.uuid4().hex}",
        "event_type": event_type,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "timestamp": timestamp,
        "version": EVENT_VERSION,
        "payload": payload,
    }
