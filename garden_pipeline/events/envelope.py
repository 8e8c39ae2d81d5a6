"""Validating one pushed event (contract section 3) against the entity catalogue.

A valid event is stored; an invalid one gets a 422 with a reason a person can
act on and is never stored. Payloads of CREATED/UPDATED go through the same
row validator as the extract, so both paths accept exactly the same entities.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from garden_pipeline.catalogue import ENTITIES, Field, FieldType, by_name
from garden_pipeline.extract.validate import RowError, RowValidator, clean_text, parse_timestamp

EVENT_TYPES = ("CREATED", "UPDATED", "DELETED")
_ENVELOPE = {"event_id", "event_type", "entity_type", "entity_id", "timestamp", "version", "payload"}
_REQUIRED = ("event_type", "entity_type", "entity_id", "timestamp", "payload")


# The envelope as JSON Schema, for the receiver's OpenAPI document (validation itself is validate_event).
EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "event_type": {"enum": list(EVENT_TYPES)},
        "entity_type": {"enum": list(ENTITIES)},
        "entity_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "timestamp": {"type": "string", "format": "date-time"},
        "version": {"type": "string"},
        "payload": {"type": "object"},
    },
    "required": list(_REQUIRED),
    "additionalProperties": False,
}


class EventError(ValueError):
    """An event that breaks the contract; the message says what to fix."""


@dataclass(frozen=True)
class ValidEvent:
    event_key: str  # idempotency key: event_id, else the contract's natural key
    event_id: str | None
    entity_type: str
    entity_id: str
    event_type: str
    timestamp: datetime
    payload: dict

    def payload_json(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False, default=str)


def _string(event: dict, key: str, max_length: int | None = None) -> str:
    """A non-empty envelope string, held to the same text rules as entity fields."""
    try:
        return clean_text(Field(key, FieldType.TEXT, min_length=1, max_length=max_length), event.get(key))
    except RowError as exc:
        raise EventError(str(exc)) from None


def _storable(value: Any, where: str) -> None:
    """PostgreSQL's jsonb holds neither NUL characters nor lone surrogates, in keys or in strings."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise EventError(f"{path} contains a NUL character, which cannot be stored")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise EventError(f"{path} contains invalid Unicode (a lone surrogate)") from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, f"a key in {path}"))
                stack.append((child, f"{path}.{key}"[:120] if isinstance(key, str) else path))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[]") for child in item)


def natural_key(entity_type: str, entity_id: str, event_type: str, timestamp: str) -> str:
    raw = "\x1f".join((entity_type, entity_id, event_type, timestamp))
    return "nk:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


def validate_event(event: Any) -> ValidEvent:
    if not isinstance(event, dict):
        raise EventError("an event must be a JSON object")
    unknown = sorted(set(event) - _ENVELOPE)
    if unknown:
        raise EventError(f"unknown envelope field(s): {', '.join(repr(k)[:60] for k in unknown[:5])}")
    missing = [k for k in _REQUIRED if k not in event]
    if missing:
        raise EventError(f"missing required field(s): {', '.join(missing)}")
    event_type = event["event_type"]
    if event_type not in EVENT_TYPES or not isinstance(event_type, str):
        raise EventError(f"'event_type' must be one of {', '.join(EVENT_TYPES)}")
    entity_type = event["entity_type"]
    if entity_type not in ENTITIES or not isinstance(entity_type, str):
        raise EventError(f"'entity_type' must be one of {', '.join(ENTITIES)}")
    entity_id = _string(event, "entity_id", 128)
    ts_text = _string(event, "timestamp", 64)
    try:
        timestamp = parse_timestamp(ts_text)
    except ValueError as exc:
        raise EventError(f"'timestamp' must be an RFC 3339 date-time with a time zone ({exc})") from None
    if "version" in event and not isinstance(event["version"], str):
        raise EventError("'version' must be a string")
    event_id = _string(event, "event_id", 200) if "event_id" in event else None
    payload = event["payload"]
    if not isinstance(payload, dict):
        raise EventError("'payload' must be a JSON object")
    _storable(payload, "'payload'")
    if event_type == "DELETED":
        if "id" in payload and payload["id"] != entity_id:
            raise EventError("'payload.id' must equal 'entity_id'")
    else:
        try:
            RowValidator(by_name(entity_type)).convert(payload)
        except RowError as exc:
            raise EventError(f"payload is not a valid {entity_type}: {exc}") from None
        if payload.get("id") != entity_id:
            raise EventError("'payload.id' must equal 'entity_id'")
    key = event_id if event_id is not None else natural_key(entity_type, entity_id, event_type, ts_text)
    return ValidEvent(key, event_id, entity_type, entity_id, event_type, timestamp, payload)
