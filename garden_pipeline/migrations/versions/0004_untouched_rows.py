"""What lets a full apply skip the rows nobody touched: the apply ledger and a hard-delete counter.

A full apply compares every staged row with GatewayDB, because that is what repairs a manual edit. Most
of those comparisons find nothing. ``gatewaydb/untouched.py`` narrows them to the rows that may differ:
rows the landing staged anew, and GatewayDB rows written since the last full apply (their ``xmin``).
What ``xmin`` cannot show is a row that is no longer there, so a statement-level trigger counts
``DELETE`` and ``TRUNCATE`` statements per entity table; when the count moved, the apply compares all.

The trigger is ``SECURITY DEFINER`` so that the gateway team's roles can still delete without rights on
the sync schema, and ``ENABLE ALWAYS`` so that it fires under ``session_replication_role = replica`` too.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from garden_pipeline.catalogue import CATALOGUE
from garden_pipeline.gatewaydb.tables import HARD_DELETE_TRIGGER as TRIGGER, sync_schema, tables_named

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SYNC = ("apply_ledger", "hard_deletes")


def upgrade(schema: str) -> None:
    metadata, tables = tables_named(schema, sync=_SYNC)
    metadata.create_all(bind=op.get_bind(), tables=tables)
    sync = sync_schema(schema)
    op.execute(f"""
        CREATE OR REPLACE FUNCTION "{sync}".count_hard_deletes() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
        BEGIN
            INSERT INTO "{sync}".hard_deletes AS h (entity, n) VALUES (TG_ARGV[0], 1)
            ON CONFLICT (entity) DO UPDATE SET n = h.n + 1;
            RETURN NULL;
        END $$""")
    for entity in CATALOGUE:
        table = f'"{schema}"."{entity.table}"'
        op.execute(f"CREATE TRIGGER {TRIGGER} AFTER DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION \"{sync}\".count_hard_deletes('{entity.name}')")
        op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {TRIGGER}")


def downgrade(schema: str) -> None:
    sync = sync_schema(schema)
    for entity in CATALOGUE:
        op.execute(f'DROP TRIGGER IF EXISTS {TRIGGER} ON "{schema}"."{entity.table}"')
    op.execute(f'DROP FUNCTION IF EXISTS "{sync}".count_hard_deletes()')
    metadata, tables = tables_named(schema, sync=_SYNC)
    metadata.drop_all(bind=op.get_bind(), tables=tables)
