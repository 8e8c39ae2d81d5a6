"""GatewayDB's tables as SQLAlchemy metadata, generated from the catalogue.

Two schemas: ``<schema>`` holds what the gateway reads (one table per entity,
named as in the contract), ``<schema>_sync`` holds the pipeline's own
bookkeeping and staged extracts, so the gateway's schema stays exactly the
contract plus ``deleted_at`` and two version columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from garden_pipeline.catalogue import CATALOGUE, Entity, FieldType, by_name

_SA_TYPES = {
    "text": sa.Text,
    "numeric": sa.Numeric,
    "timestamptz": lambda: sa.DateTime(timezone=True),
    "bigint": sa.BigInteger,
    "text[]": lambda: pg.ARRAY(sa.Text),
}

# Bookkeeping columns on every entity table.
VERSION_COLUMN = "source_ts"  # Model Garden time of the state held: event timestamp or extract generated_at
SYNCED_COLUMN = "synced_at"  # when the pipeline last wrote the row
DELETED_COLUMN = "deleted_at"  # tombstone; set when Model Garden deleted the entity
# Staging column: the row's text digest, NULL where the row may not be carried over (gatewaydb/carry_over.py).
DIGEST_COLUMN = "_digest"
# Staging column: the row's ordinal, ord_base (landed_extracts) + its position in the document; breaks ties
# between duplicate ids, and tells a carried row (at most ord_base) from one this landing staged.
ORDINAL_COLUMN = "_ord"
# Statement trigger on every entity table counting hard deletes (migration 0004, gatewaydb/untouched.py).
HARD_DELETE_TRIGGER = "garden_hard_deletes"


def sync_schema(schema: str) -> str:
    return f"{schema}_sync"


def parent_index_names(entity: Entity) -> list[str]:
    """The B-tree index on each parent-id column (the gateway's joins; the migrations create them)."""
    return [f"ix_{entity.table}_{col}" for col in entity.parents]


def _sa_type(ftype: FieldType):
    return _SA_TYPES[ftype.sql_type]()


def _entity_table(entity: Entity, metadata: sa.MetaData, schema: str) -> sa.Table:
    columns: list[sa.Column] = []
    for f in entity.fields:
        args: list = []
        if f.parent:
            parent = by_name(f.parent)
            args.append(
                sa.ForeignKey(f"{schema}.{parent.table}.id", name=f"fk_{entity.table}_{f.name}")
            )
        columns.append(
            sa.Column(f.name, _sa_type(f.type), *args, primary_key=f.name == "id", nullable=f.sql_nullable)
        )
    columns += [
        sa.Column(DELETED_COLUMN, sa.DateTime(timezone=True), nullable=True),
        sa.Column(VERSION_COLUMN, sa.DateTime(timezone=True), nullable=False),
        sa.Column(SYNCED_COLUMN, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    ]
    indexes = [sa.Index(name, col) for name, col in zip(parent_index_names(entity), entity.parents)]
    return sa.Table(entity.table, metadata, *columns, *indexes, schema=schema)


def _sync_tables(metadata: sa.MetaData, schema: str) -> None:
    ts = lambda: sa.DateTime(timezone=True)  # noqa: E731
    sa.Table(
        "sync_state",
        metadata,
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("watermark", ts(), comment="generated_at of the last extract whose writes committed"),
        sa.Column("last_full_generated_at", ts()),
        sa.Column("last_success_at", ts()),
        sa.Column("last_success_run_id", sa.Text),
        sa.Column("last_mode", sa.Text),
        schema=schema,
    )
    sa.Table(
        "landed_extracts",
        metadata,
        sa.Column("batch_id", sa.Text, primary_key=True),
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("generated_at", ts(), nullable=False),
        sa.Column("updated_since", ts()),
        sa.Column("stage_table", sa.Text, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("unknown_fields", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("landed_at", ts(), nullable=False, server_default=sa.func.now()),
        sa.Column("applied_at", ts()),
        sa.Column("ord_base", sa.BigInteger, comment="the staged rows' ordinals are above it (migration 0005); "
                  "NULL: landed before it was kept"),
        sa.Column("scattered", sa.BigInteger, comment="rows staged out of the extract's order: appended by "
                  "carrying landings since the table was last landed whole (migration 0006); NULL: not counted"),
        sa.Index("ix_landed_extracts_entity", "entity", "landed_at"),
        schema=schema,
    )
    sa.Table(
        "apply_ledger",
        metadata,
        sa.Column("batch_id", sa.Text, primary_key=True),
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("generated_at", ts(), nullable=False, comment="the applied full extract's generated_at"),
        sa.Column("apply_xid", sa.BigInteger, nullable=False, comment="xid8 of the transaction that applied it"),
        sa.Column("snap_xmin", sa.BigInteger, nullable=False, comment="xmin of that transaction's first snapshot"),
        sa.Column("hard_deletes", sa.BigInteger, nullable=False, comment="hard_deletes.n as of that snapshot"),
        sa.Column("unlisted", pg.ARRAY(sa.Text), comment="live ids the staging table does not vouch for; "
                  "NULL: too many to list"),
        sa.Column("land_snap_xmin", sa.BigInteger, comment="set when a landing took the staging table over"),
        sa.Column("gone", pg.ARRAY(sa.Text), comment="ids that landing deleted from the taken-over table"),
        schema=schema,
    )
    sa.Table(
        "hard_deletes",
        metadata,
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False, comment="DELETE/TRUNCATE statements on the entity table"),
        schema=schema,
    )
    sa.Table(
        "run_counts",
        metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("inserted", sa.BigInteger, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
        sa.Column("deleted", sa.BigInteger, nullable=False),
        sa.Column("unchanged", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
        sa.Column("stale", sa.BigInteger, nullable=False),
        sa.Column("watermark", ts()),
        sa.Column("committed_at", ts(), nullable=False, server_default=sa.func.now()),
        schema=schema,
    )
    sa.Table(
        "rejected_records",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", pg.JSONB),
        sa.Column("rejected_at", ts(), nullable=False, server_default=sa.func.now()),
        sa.Index("ix_rejected_records_entity", "entity", "rejected_at"),
        sa.Index("ix_rejected_records_run", "run_id"),
        schema=schema,
    )
    sa.Table(
        "outbox",
        metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False, unique=True),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("fields", pg.JSONB, nullable=False),
        sa.Column("created_at", ts(), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", ts()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Index("ix_outbox_pending", "created_at", postgresql_where=sa.text("published_at IS NULL")),
        schema=schema,
    )


INBOX_STATES = ("pending", "applied", "stale", "duplicate", "parked", "dead_lettered")


def _event_tables(metadata: sa.MetaData, schema: str) -> None:
    ts = lambda: sa.DateTime(timezone=True)  # noqa: E731
    sa.Table(
        "inbox",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_key", sa.Text, nullable=False, unique=True,
                  comment="event_id, else the contract's natural key (entity_type, entity_id, event_type, timestamp)"),
        sa.Column("event_id", sa.Text),
        sa.Column("entity_type", sa.Text, nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("event_ts", ts(), nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("received_at", ts(), nullable=False, server_default=sa.func.now()),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("state_reason", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("parked_since", ts()),
        sa.Column("settled_at", ts()),
        sa.Column("run_id", sa.Text),
        sa.CheckConstraint(f"state IN {INBOX_STATES!r}".replace('",)', '")'), name="ck_inbox_state"),
        sa.Index("ix_inbox_open", "id", postgresql_where=sa.text("state IN ('pending', 'parked')")),
        sa.Index("ix_inbox_state_settled", "state", "settled_at"),
        schema=schema,
    )
    sa.Table(
        "tombstones",
        metadata,
        sa.Column("entity", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("deleted_at", ts(), nullable=False,
                  comment="a DELETED event for an entity GatewayDB never held: older CREATED/UPDATED must not revive it"),
        schema=schema,
    )


def build_metadata(schema: str) -> sa.MetaData:
    """Metadata for GatewayDB's entity tables in ``schema`` and bookkeeping in ``<schema>_sync``."""
    metadata = sa.MetaData()
    for entity in CATALOGUE:
        _entity_table(entity, metadata, schema)
    _sync_tables(metadata, sync_schema(schema))
    _event_tables(metadata, sync_schema(schema))
    return metadata


def tables_named(schema: str, gateway: tuple[str, ...] = (), sync: tuple[str, ...] = ()):
    """(metadata, tables) for a migration that creates or drops exactly these tables."""
    metadata = build_metadata(schema)
    names = [f"{schema}.{t}" for t in gateway] + [f"{sync_schema(schema)}.{t}" for t in sync]
    return metadata, [metadata.tables[n] for n in names]
