"""Where a landing's ordinals start: ``landed_extracts.ord_base``.

A landing that carries rows over (``gatewaydb/carry_over.py``) numbers the rows it stages above every
ordinal of the table it took over, so that a row it landed again is told from its old copy. It keeps the
base here for the next landing to start above it. Rows landed before this revision have NULL: the next
landing then reads the table's largest ordinal once.

``0001`` builds ``landed_extracts`` from the current table definitions, so a new schema has the column
already; hence ``IF NOT EXISTS``.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from garden_pipeline.gatewaydb.tables import sync_schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{sync_schema(schema)}".landed_extracts ADD COLUMN IF NOT EXISTS ord_base bigint')


def downgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{sync_schema(schema)}".landed_extracts DROP COLUMN IF EXISTS ord_base')
