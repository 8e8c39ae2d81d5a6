"""Pick the real or the embedded implementation of each resource from the environment."""

from __future__ import annotations

from dagster import EnvVar

from garden_pipeline.resources.completion_stream import EmbeddedCompletionStream, RedisCompletionStream
from garden_pipeline.resources.gateway_db import EmbeddedGatewayDB, PostgresGatewayDB
from garden_pipeline.resources.model_garden import LocalModelGarden, ModelGardenClient
from garden_pipeline.settings import Settings, garden_home


def build_resources(settings: Settings) -> dict:
    home = garden_home()
    # Secrets go in as EnvVar so Dagster resolves them at run time and never shows them in the UI.
    if settings.model_garden_url:
        model_garden = ModelGardenClient(
            url=settings.model_garden_url,
            token=EnvVar("MODEL_GARDEN_TOKEN") if settings.model_garden_token else None,
        )
    else:
        model_garden = LocalModelGarden(scale=settings.simulator_scale)
    timeouts = {"statement_timeout_ms": settings.statement_timeout_ms, "lock_timeout_ms": settings.lock_timeout_ms}
    if settings.gateway_db_url:
        gateway_db = PostgresGatewayDB(db_url=EnvVar("GATEWAY_DB_URL"), db_schema=settings.gateway_db_schema,
                                       **timeouts)
    else:
        gateway_db = EmbeddedGatewayDB(data_dir=str(home / "pgdata"), db_schema=settings.gateway_db_schema,
                                       **timeouts)
    if settings.redis_url:
        stream = RedisCompletionStream(redis_url=EnvVar("REDIS_URL"), stream=settings.redis_stream)
    else:
        stream = EmbeddedCompletionStream(db_file=str(home / "redis" / "garden.rdb"), stream=settings.redis_stream)
    return {"model_garden": model_garden, "gateway_db": gateway_db, "completion_stream": stream}
