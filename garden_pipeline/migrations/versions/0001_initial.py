"""GatewayDB v1: the contract's eight entity tables with tombstones, and the sync bookkeeping.

Generated from the catalogue as it stood for contract v1. A later change to
the catalogue needs a new revision that alters these tables; the test
``test_migrations_match_catalogue`` fails until it exists.

Revision ID: 0001
Revises:
"""

from alembic import op

from garden_pipeline.catalogue import CATALOGUE
from garden_pipeline.gatewaydb.tables import tables_named

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_GATEWAY = tuple(e.table for e in CATALOGUE)
_SYNC = ("sync_state", "landed_extracts", "run_counts", "rejected_records", "outbox")


def upgrade(schema: str) -> None:
    metadata, tables = tables_named(schema, _GATEWAY, _SYNC)
    metadata.create_all(bind=op.get_bind(), tables=tables)


def downgrade(schema: str) -> None:
    metadata, tables = tables_named(schema, _GATEWAY, _SYNC)
    metadata.drop_all(bind=op.get_bind(), tables=tables)
