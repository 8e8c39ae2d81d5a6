"""Repairing drift without a full resync: re-apply only the ids that differ from a fresh full extract.

The fresh extract is landed like any other (and becomes the drift checks'
reference); only rows whose hash differs are written, by the same
write_rows as every other path, and only ids GatewayDB holds live but the
extract lacks are tombstoned, behind the delete guard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import by_name
from garden_pipeline.checks.gateway_findings import Reference, drifting_ids
from garden_pipeline.gatewaydb.apply import DeletePolicy, check_delete_guard, lock_entity, write_rows
from garden_pipeline.gatewaydb.sql import entity_table, ident, sync_table
from garden_pipeline.gatewaydb.staging import REJECTED, LandedRef
from garden_pipeline.gatewaydb.tables import DELETED_COLUMN, SYNCED_COLUMN, VERSION_COLUMN, sync_schema


@dataclass
class RepairResult:
    entity: str
    drifting: int = 0
    written: int = 0
    deleted: int = 0
    ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


def repair_entity(conn: psycopg.Connection, schema: str, ref: LandedRef, run_id: str,
                  only_ids: list[str] | None = None, policy: DeletePolicy = DeletePolicy()) -> RepairResult:
    """Bring the drifting ids of ``ref.entity`` (or just ``only_ids`` among them) to the landed extract."""
    entity = by_name(ref.entity)
    started = time.monotonic()
    result = RepairResult(entity.name)
    with conn.transaction():
        lock_entity(conn, schema, entity.name)
        total, rows, _ = drifting_ids(conn, schema, entity, Reference(ref.batch_id, ref.stage_table,
                                                                       ref.generated_at))
        if only_ids is not None:
            wanted = set(only_ids)
            rows = [r for r in rows if r[0] in wanted]
        result.drifting = len(rows)
        result.ids = [r[0] for r in rows]
        if rows:
            ids = [r[0] for r in rows]
            stage = ident(sync_schema(schema), ref.stage_table)
            src = sql.SQL("(SELECT s.*, %(v)s::timestamptz AS _version, 'upsert'::text AS _op FROM {stage} s "
                          "WHERE NOT s.{rej} AND s.id = ANY(%(ids)s))").format(stage=stage, rej=ident(REJECTED))
            written = write_rows(conn, schema, entity, src, {"v": ref.generated_at, "ids": ids}, bump_version=False)
            result.written = written.inserted + written.updated
            unexpected = [i for i, how in rows if how == "unexpected"]
            live = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(
                entity_table(schema, entity), ident(DELETED_COLUMN))).fetchone()[0]
            check_delete_guard(entity, live, len(unexpected), ref.rows + ref.rejected, policy)
            if unexpected:
                result.deleted = conn.execute(
                    sql.SQL("UPDATE {t} SET {d} = %(v)s, {ver} = %(v)s, {synced} = now() WHERE id = ANY(%(ids)s) "
                            "AND {d} IS NULL AND {ver} < %(v)s").format(
                        t=entity_table(schema, entity), d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN),
                        synced=ident(SYNCED_COLUMN)),
                    {"v": ref.generated_at, "ids": unexpected},
                ).rowcount
        conn.execute(
            sql.SQL("""
                INSERT INTO {rc} (run_id, entity, mode, inserted, updated, deleted, unchanged, rejected, stale)
                VALUES (%s, %s, 'repair', 0, %s, %s, 0, 0, 0)
                ON CONFLICT (run_id, entity) DO UPDATE SET updated = EXCLUDED.updated, deleted = EXCLUDED.deleted
            """).format(rc=sync_table(schema, "run_counts")),
            (run_id, entity.name, result.written, result.deleted),
        )
        conn.execute(sql.SQL("UPDATE {} SET applied_at = now() WHERE batch_id = %s AND entity = %s").format(
            sync_table(schema, "landed_extracts")), (ref.batch_id, entity.name))
    result.seconds = time.monotonic() - started
    return result
