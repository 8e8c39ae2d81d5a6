"""Relay: publish pending outbox events to the Redis stream, at most once per event_id on the wire.

A Lua script sets a marker key and appends the entry atomically, so a relay
that crashes after XADD but before marking the row published re-sends
nothing: the next attempt finds the marker and only marks the row. Consumers
may still deduplicate on ``event_id``, as the contract asks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
import redis

from garden_pipeline.gatewaydb import outbox

log = logging.getLogger(__name__)

_PUBLISH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
end
return false
"""


@dataclass
class RelayResult:
    published: list[str] = field(default_factory=list)
    already_on_stream: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def publish_once(client: redis.Redis, stream: str, event: outbox.PendingEvent, ttl: int) -> bool:
    """XADD the event unless this event_id was already published; True if it was added now."""
    args: list[str] = [str(ttl)]
    for key, value in event.fields.items():
        args += [key, value]
    entry_id = client.eval(_PUBLISH_ONCE, 2, f"{stream}:published:{event.event_id}", stream, *args)
    return bool(entry_id)


def relay_pending(
    conn: psycopg.Connection, schema: str, client: redis.Redis, stream: str, ttl: int, limit: int = 100
) -> RelayResult:
    result = RelayResult()
    for event in outbox.pending(conn, schema, limit):
        try:
            added = publish_once(client, stream, event, ttl)
        except redis.RedisError as exc:
            # Redis errors name host and port at most, never credentials; keep only the first line.
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            outbox.mark_failed(conn, schema, event.event_id, message)
            result.failed[event.event_id] = message
            log.warning("completion event %s not delivered yet: %s", event.event_id, message)
            break  # Redis is down; keep order and try again later
        outbox.mark_published(conn, schema, event.event_id)
        (result.published if added else result.already_on_stream).append(event.event_id)
    return result
