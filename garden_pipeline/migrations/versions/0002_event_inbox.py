"""The real-time path: the event inbox and tombstones for entities never seen alive.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from garden_pipeline.gatewaydb.tables import build_metadata, sync_schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = ("inbox", "tombstones")


def _tables(schema: str):
    metadata = build_metadata(schema)
    return metadata, [metadata.tables[f"{sync_schema(schema)}.{t}"] for t in _TABLES]


def upgrade(schema: str) -> None:
    metadata, tables = _tables(schema)
    metadata.create_all(bind=op.get_bind(), tables=tables)


def downgrade(schema: str) -> None:
    metadata, tables = _tables(schema)
    metadata.drop_all(bind=op.get_bind(), tables=tables)
