"""How many of a staging table's rows stand out of the extract's order: ``landed_extracts.scattered``.

A landing that carries rows over (``gatewaydb/carry_over.py``) appends the rows it stages anew at the
table's end; sync after sync they gather there, out of the order the next extract lists them in, and the
carry-over window misses more of them each time. The count lets a landing see when the table it would take
over is too scattered and land the whole extract instead. Rows landed before this revision have NULL:
counted from the next landing on.

``0001`` builds ``landed_extracts`` from the current table definitions, so a new schema has the column
already; hence ``IF NOT EXISTS``.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from garden_pipeline.gatewaydb.tables import sync_schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{sync_schema(schema)}".landed_extracts ADD COLUMN IF NOT EXISTS scattered bigint')


def downgrade(schema: str) -> None:
    op.execute(f'ALTER TABLE "{sync_schema(schema)}".landed_extracts DROP COLUMN IF EXISTS scattered')
