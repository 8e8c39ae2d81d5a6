"""Delivers outbox events that could not be published when their run finished (Redis was down)."""


from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from garden_pipeline.publish.relay import relay_pending
from garden_pipeline.resources import CompletionStreamResource, GatewayDBResource


@sensor(
    name="outbox_relay_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Publishes pending sync.completed events from the outbox to the Redis stream.",
)
def outbox_relay_sensor(
    context: SensorEvaluationContext, gateway_db: GatewayDBResource, completion_stream: CompletionStreamResource
):
    with gateway_db.connect() as conn:
        result = relay_pending(
            conn, gateway_db.db_schema, completion_stream.client(), completion_stream.stream,
            completion_stream.dedupe_ttl_seconds,
        )
    return SkipReason(
        f"published {len(result.published)}, already on the stream {len(result.already_on_stream)}, "
        f"failed {len(result.failed)}"
    )
