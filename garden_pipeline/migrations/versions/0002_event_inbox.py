"""The real-time path: the event inbox and tombstones for entities never seen alive.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from garden_pipeline.gatewaydb.tables import tables_named

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SYNC = ("inbox", "tombstones")


def upgrade(schema: str) -> None:
    metadata, tables = tables_named(schema, sync=_SYNC)
    metadata.create_all(bind=op.get_bind(), tables=tables)


def downgrade(schema: str) -> None:
    metadata, tables = tables_named(schema, sync=_SYNC)
    metadata.drop_all(bind=op.get_bind(), tables=tables)
