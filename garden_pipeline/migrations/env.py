"""Alembic environment for GatewayDB.

The schema name is a run-time setting, so it comes in through
``config.attributes["schema"]`` (set by ``garden_pipeline.gatewaydb.migrate``)
or ``alembic -x schema=…``; the version table lives in ``<schema>_sync``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from garden_pipeline.gatewaydb.connection import advisory_key, sqlalchemy_url
from garden_pipeline.gatewaydb.tables import build_metadata, sync_schema
from garden_pipeline.settings import DEFAULT_SCHEMA, env, validate_schema_name

config = context.config
schema = validate_schema_name(
    config.attributes.get("schema") or context.get_x_argument(as_dictionary=True).get("schema") or DEFAULT_SCHEMA
)
url = config.attributes.get("url") or env("GATEWAY_DB_URL")
if not url:
    raise SystemExit("set GATEWAY_DB_URL (or use `garden-pipeline db upgrade`, which knows the embedded default)")
target_metadata = build_metadata(schema)

engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
with engine.connect() as connection:
    # Two processes starting at once (steps, receiver, CLI) must not both run the migration.
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key("migrate", schema)})
    connection.commit()
    try:
        for name in (schema, sync_schema(schema)):
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{name}"'))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=sync_schema(schema),
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations(schema=schema)
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key("migrate", schema)})
        connection.commit()
engine.dispose()
