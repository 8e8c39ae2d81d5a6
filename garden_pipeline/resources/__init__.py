"""Dagster resources: one abstract interface each, with a real and an embedded implementation."""

from garden_pipeline.resources.completion_stream import (
    CompletionStreamResource,
    EmbeddedCompletionStream,
    RedisCompletionStream,
)
from garden_pipeline.resources.gateway_db import EmbeddedGatewayDB, GatewayDBResource, PostgresGatewayDB
from garden_pipeline.resources.model_garden import LocalModelGarden, ModelGardenClient, ModelGardenResource

__all__ = [
    "CompletionStreamResource",
    "EmbeddedCompletionStream",
    "RedisCompletionStream",
    "EmbeddedGatewayDB",
    "GatewayDBResource",
    "PostgresGatewayDB",
    "LocalModelGarden",
    "ModelGardenClient",
    "ModelGardenResource",
]
