"""GatewayDB as a Dagster resource: a PostgreSQL URL in production, pgserver locally."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import psycopg
from dagster import ConfigurableResource
from pydantic import Field, field_validator

from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.settings import DEFAULT_SCHEMA, validate_schema_name


class GatewayDBResource(ConfigurableResource, ABC):
    """Where GatewayDB lives. Every connection handed out is on a migrated schema."""

    db_schema: str = Field(default=DEFAULT_SCHEMA, description="Schema of the gateway's tables (GATEWAY_DB_SCHEMA).")
    statement_timeout_ms: int = Field(
        default=0, ge=0, description="Cancel any one statement after this long (0: no limit); the step then fails "
        "and its transaction rolls back.")
    lock_timeout_ms: int = Field(
        default=0, ge=0, description="Give up waiting for a lock after this long (0: wait); a concurrent sync of "
        "the same entity otherwise waits for the first to commit.")

    @field_validator("db_schema")
    @classmethod
    def _valid_schema(cls, value: str) -> str:
        return validate_schema_name(value)

    @abstractmethod
    def url(self) -> str: ...

    def migrate(self) -> None:
        migrate.upgrade(self.url(), self.db_schema)

    def connect(self, **kwargs) -> psycopg.Connection:
        """A new autocommit connection (caller closes it); migrations are applied on first use per process.

        Autocommit, so that every ``with conn.transaction()`` block is a real
        transaction that commits at its end, never a savepoint inside an
        implicit transaction left open by an earlier SELECT.
        """
        self.migrate()
        kwargs.setdefault("autocommit", True)
        options = []
        if self.statement_timeout_ms:
            options.append(f"-c statement_timeout={self.statement_timeout_ms}")
        if self.lock_timeout_ms:
            options.append(f"-c lock_timeout={self.lock_timeout_ms}")
        if options:
            kwargs.setdefault("options", " ".join(options))
        kwargs.setdefault("application_name", "garden_pipeline")
        return connect(self.url(), **kwargs)


class PostgresGatewayDB(GatewayDBResource):
    """A PostgreSQL server named by GATEWAY_DB_URL (``postgresql://user:pass@host:5432/db``)."""

    db_url: str = Field(description="GATEWAY_DB_URL; kept out of logs and metadata.")

    def url(self) -> str:
        return self.db_url


class EmbeddedGatewayDB(GatewayDBResource):
    """PostgreSQL 16 from the pgserver wheel, data under ``data_dir``; for demos, tests and laptops."""

    data_dir: str = Field(description="Folder of the embedded cluster's data.")

    def url(self) -> str:
        from garden_pipeline.embedded.postgres import embedded_postgres_url

        return embedded_postgres_url(Path(self.data_dir))
