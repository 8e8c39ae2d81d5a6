"""The final step of every sync run: record and publish ``sync.completed``.

The event is written to the outbox first (so a Redis outage loses nothing)
and then published right away; the relay sensor delivers anything left.
"""




from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from psycopg import sql

from garden_pipeline.defs.sync.keys import COMPLETION_KEY, GATEWAY_KEYS
from garden_pipeline.gatewaydb.outbox import enqueue_completion
from garden_pipeline.gatewaydb.sql import sync_table
from garden_pipeline.publish.relay import relay_pending
from garden_pipeline.resources import CompletionStreamResource, GatewayDBResource


def committed_counts(conn, schema: str, run_id: str):
    rows = conn.execute(
        sql.SQL(
            "SELECT entity, mode, inserted, updated, deleted, unchanged, watermark FROM {} WHERE run_id = %s"
        ).format(sync_table(schema, "run_counts")),
        (run_id,),
    ).fetchall()
    counts = {e: {"inserted": i, "updated": u, "deleted": d, "unchanged": n} for e, _, i, u, d, n, _ in rows}
    modes = {m for _, m, *_ in rows}
    watermark = max((w for *_, w in rows if w is not None), default=None)
    return counts, modes, watermark


@asset(
    key=COMPLETION_KEY,
    deps=list(GATEWAY_KEYS.values()),
    group_name="notifications",
    description="One `sync.completed` entry on the Redis stream per run whose GatewayDB writes committed "
    "(via the outbox, so it is delivered once Redis is reachable).",
    kinds={"redis"},
)
def sync_completed(
    context: AssetExecutionContext, gateway_db: GatewayDBResource, completion_stream: CompletionStreamResource
) -> MaterializeResult:
    schema = gateway_db.db_schema
    with gateway_db.connect() as conn:
        counts, modes, watermark = committed_counts(conn, schema, context.run.run_id)
        if not counts:
            context.log.info("this run committed no GatewayDB writes (dry run or nothing selected); no event")
            return MaterializeResult(metadata={"published": False, "reason": "no committed writes in this run"})
        mode = modes.pop() if len(modes) == 1 else "full"
        event_id, _ = enqueue_completion(conn, schema, context.run.run_id, mode, counts, watermark)
        try:
            result = relay_pending(
                conn, schema, completion_stream.client(), completion_stream.stream, completion_stream.dedupe_ttl_seconds
            )
            delivered = event_id in result.published or event_id in result.already_on_stream
            error = result.failed.get(event_id, "")
        except Exception as exc:  # Redis unreachable at connect time: the outbox keeps the event
            delivered, error = False, f"{type(exc).__name__}"
        if not delivered:
            context.log.warning(
                f"sync.completed {event_id} recorded in the outbox but not yet on Redis ({error}); "
                "the outbox relay will deliver it"
            )
    lines = ["| entity | inserted | updated | deleted | unchanged |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {e} | {c['inserted']} | {c['updated']} | {c['deleted']} | {c['unchanged']} |"
              for e, c in counts.items()]
    return MaterializeResult(
        metadata={
            "summary": MetadataValue.md(f"**{mode} sync** committed\n\n" + "\n".join(lines)),
            "event_id": event_id,
            "mode": mode,
            "published": delivered,
            "counts": MetadataValue.json(counts),
            "watermark": watermark.isoformat() if watermark else "",
            "stream": completion_stream.stream,
            "pending_error": error,
        }
    )


