"""GatewayDB v1: the contract's eight entity tables with tombstones, and the sync bookkeeping.

Generated from the catalogue as it stood for contract v1. A later change to
the catalogue needs a new revision that alters these tables; the test
``test_migrations_match_catalogue`` fails until it exists.

Revision ID: 0001
Revises:
"""

from alembic import op

from garden_pipeline.gatewaydb.tables import build_metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(schema: str) -> None:
    build_metadata(schema).create_all(bind=op.get_bind())


def downgrade(schema: str) -> None:
    build_metadata(schema).drop_all(bind=op.get_bind())
