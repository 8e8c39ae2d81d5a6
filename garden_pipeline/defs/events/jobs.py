"""Jobs of the event path: apply a batch of inbox events, replay dead letters, purge old events."""

from datetime import timedelta
from typing import List, Optional

from dagster import (
    AssetMaterialization,
    Config,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    in_process_executor,
    job,
    op,
)
from pydantic import Field
from psycopg import sql

from garden_pipeline.catalogue import by_name
from garden_pipeline.defs.sync.keys import GATEWAY_KEYS
from garden_pipeline.gatewaydb.apply_events import STATES, apply_inbox_batch
from garden_pipeline.gatewaydb.outbox import enqueue_completion
from garden_pipeline.gatewaydb.sql import sync_table
from garden_pipeline.publish.relay import relay_pending
from garden_pipeline.resources import CompletionStreamResource, GatewayDBResource
from garden_pipeline.settings import env

EVENTS_TAGS = {"garden/events": "apply"}
_PARK_TIMEOUT = int(env("GARDEN_PARK_TIMEOUT_SECONDS", "3600"))  # type: ignore[arg-type]


class ApplyEventsConfig(Config):
    max_id: Optional[int] = Field(
        default=None, description="Apply open inbox rows up to this id (the sensor's batch); default: all pending."
    )
    park_timeout_seconds: int = Field(
        default=_PARK_TIMEOUT, ge=0,
        description="An event waiting this long for its parent is dead-lettered (GARDEN_PARK_TIMEOUT_SECONDS).",
    )


def announce(context, gateway_db: GatewayDBResource, stream: CompletionStreamResource, mode: str, counts: dict):
    """Outbox first, then an immediate publish attempt; the relay sensor delivers what this misses."""
    schema = gateway_db.db_schema
    with gateway_db.connect() as conn:
        event_id, _ = enqueue_completion(conn, schema, context.run.run_id, mode, counts, None)
        try:
            relay_pending(conn, schema, stream.client(), stream.stream, stream.dedupe_ttl_seconds)
        except Exception as exc:  # Redis unreachable: the outbox keeps the event
            context.log.warning(f"sync.completed {event_id} kept in the outbox ({type(exc).__name__})")
    return event_id


@op(
    ins={"after": In(Nothing)},  # lets the replay job run it after re-queuing dead letters
    out=Out(Nothing),
    description="Apply a batch of inbox events to GatewayDB (one transaction) and announce sync.completed.",
)
def apply_events(context: OpExecutionContext, config: ApplyEventsConfig, gateway_db: GatewayDBResource,
                 completion_stream: CompletionStreamResource):
    schema = gateway_db.db_schema
    with gateway_db.connect() as conn:
        result = apply_inbox_batch(conn, schema, context.run.run_id, max_id=config.max_id,
                                   park_timeout=timedelta(seconds=config.park_timeout_seconds))
    states = {s: result.states.get(s, 0) for s in STATES}
    context.log.info(f"{result.events} inbox events: " + ", ".join(f"{n} {s}" for s, n in states.items()))
    for reason in result.dead_letter_reasons:
        context.log.warning(f"dead-lettered: {reason}")
    for entity, c in result.per_entity.items():
        if sum(c.values()):
            yield AssetMaterialization(
                asset_key=GATEWAY_KEYS[entity],
                description=f"{by_name(entity).plural} changed by pushed events",
                metadata={"source": "events", **{k: MetadataValue.int(v) for k, v in c.items()}},
            )
    event_id = ""
    if result.events and states["applied"]:
        counts = {e: {**c, "unchanged": 0} for e, c in result.per_entity.items()}
        event_id = announce(context, gateway_db, completion_stream, "events", counts)
    yield Output(None, metadata={
        "events": MetadataValue.int(result.events),
        **{s: MetadataValue.int(n) for s, n in states.items()},
        "duration_s": MetadataValue.float(round(result.seconds, 3)),
        "events_per_s": MetadataValue.float(round(result.events / result.seconds, 1) if result.seconds else 0.0),
        "per_entity": MetadataValue.json(result.per_entity),
        "sync_completed_event_id": event_id,
    })


@job(
    executor_def=in_process_executor,  # one op; a process per step would only add latency
    tags=EVENTS_TAGS,
    description="Apply pending Model Garden events from the inbox (with no config: everything pending).",
)
def apply_events_job():
    apply_events()


class ReplayConfig(Config):
    inbox_ids: List[int] = Field(default_factory=list, description="Dead-lettered inbox ids to replay.")
    all_dead_letters: bool = Field(default=False, description="Replay every dead-lettered event.")


def replay_dead_letters_sql(conn, schema: str, ids: list[int], everything: bool) -> int:
    if not ids and not everything:
        raise ValueError("name the inbox ids to replay, or ask for all dead letters")
    return conn.execute(
        sql.SQL(
            "UPDATE {} SET state = 'pending', state_reason = 'replayed after: ' || coalesce(state_reason, ''), "
            "parked_since = NULL, settled_at = NULL WHERE state = 'dead_lettered' AND (%(all)s OR id = ANY(%(ids)s))"
        ).format(sync_table(schema, "inbox")),
        {"all": everything, "ids": ids},
    ).rowcount


@op(out=Out(Nothing), description="Put dead-lettered events back to pending and apply them now.")
def replay_dead_letters(context: OpExecutionContext, config: ReplayConfig, gateway_db: GatewayDBResource,
                        completion_stream: CompletionStreamResource):
    with gateway_db.connect() as conn:
        n = replay_dead_letters_sql(conn, gateway_db.db_schema, config.inbox_ids, config.all_dead_letters)
    context.log.info(f"{n} dead-lettered events back to pending")
    yield Output(None, metadata={"replayed": MetadataValue.int(n)})


@job(executor_def=in_process_executor, tags=EVENTS_TAGS,
     description="Replay dead-lettered events (config: inbox_ids or all_dead_letters), then apply them.")
def replay_dead_letters_job():
    apply_events(after=replay_dead_letters())


class PurgeConfig(Config):
    older_than_days: int = Field(default=7, ge=0, description="Delete settled events older than this.")


def purge_inbox_sql(conn, schema: str, older_than_days: int) -> int:
    """Delete settled (applied, stale, duplicate) events; parked and dead-lettered ones stay for operators."""
    return conn.execute(
        sql.SQL("DELETE FROM {} WHERE state IN ('applied', 'stale', 'duplicate') "
                "AND settled_at < now() - make_interval(days => %s)").format(sync_table(schema, "inbox")),
        (older_than_days,),
    ).rowcount


@op(description="Inbox retention: delete settled events older than the configured age.")
def purge_inbox(context: OpExecutionContext, config: PurgeConfig, gateway_db: GatewayDBResource):
    with gateway_db.connect() as conn:
        n = purge_inbox_sql(conn, gateway_db.db_schema, config.older_than_days)
    context.add_output_metadata({"purged": MetadataValue.int(n)})


@job(executor_def=in_process_executor, description="Delete settled inbox events older than N days (default 7).")
def purge_inbox_job():
    purge_inbox()
