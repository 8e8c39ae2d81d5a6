"""repair_drift_job: fix what the content-drift check found, touching only the drifting rows."""

from typing import List

from dagster import Config, MetadataValue, OpExecutionContext, Out, Output, Nothing, in_process_executor, job, op
from pydantic import Field

from garden_pipeline.catalogue import ENTITIES, by_name
from garden_pipeline.defs.events.jobs import announce
from garden_pipeline.defs.sync.jobs import SYNC_TAGS
from garden_pipeline.gatewaydb.apply import DeletePolicy
from garden_pipeline.gatewaydb.repair import repair_entity
from garden_pipeline.gatewaydb.staging import drop_stale_stages, find_landed, land_extract
from garden_pipeline.resources import CompletionStreamResource, GatewayDBResource, ModelGardenResource


class RepairConfig(Config):
    entities: List[str] = Field(default_factory=list, description="Entity names to repair; empty: all of them.")
    ids: List[str] = Field(default_factory=list, description="Only these ids (among the drifting ones).")
    allow_large_delete: bool = Field(default=False, description="Let the repair pass the delete guard.")


@op(out=Out(Nothing), description="Fetch a fresh full extract and re-apply only the ids that drift from it.")
def repair_drift(context: OpExecutionContext, config: RepairConfig, model_garden: ModelGardenResource,
                 gateway_db: GatewayDBResource, completion_stream: CompletionStreamResource):
    unknown = [e for e in config.entities if e not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown entities {unknown}; known: {', '.join(ENTITIES)}")
    entities = [e for e in ENTITIES if not config.entities or e in config.entities]
    schema = gateway_db.db_schema
    run_id = context.run.run_id
    results = []
    with gateway_db.connect() as conn:
        with model_garden.open_extract(None, log=context.log.warning) as chunks:
            land_extract(conn, schema, run_id, chunks, entities, mode="full")
        for name in entities:
            ref = find_landed(conn, schema, name, run_id)
            result = repair_entity(conn, schema, ref, run_id, config.ids or None,
                                   DeletePolicy(allow_large_delete=config.allow_large_delete))
            drop_stale_stages(conn, schema, name, keep=set())
            context.log.info(f"{by_name(name).plural}: {result.drifting} drifting, {result.written} rewritten, "
                             f"{result.deleted} tombstoned {result.ids[:10]}")
            results.append(result)
    counts = {r.entity: {"inserted": 0, "updated": r.written, "deleted": r.deleted, "unchanged": 0}
              for r in results if r.written or r.deleted}
    if counts:
        # A repair changes what gateways read, so it is announced like the full sync it stands in for.
        announce(context, gateway_db, completion_stream, "full", counts)
    yield Output(None, metadata={
        "repaired": MetadataValue.json({r.entity: {"drifting": r.drifting, "rewritten": r.written,
                                                   "tombstoned": r.deleted, "ids": r.ids[:20]} for r in results}),
        "rows_written": MetadataValue.int(sum(r.written + r.deleted for r in results)),
    })


@job(executor_def=in_process_executor, tags=SYNC_TAGS,
     description="Repair content drift: re-apply only the rows that differ from a fresh full extract.")
def repair_drift_job():
    repair_drift()
