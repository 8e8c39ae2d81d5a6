"""The apply function: bring one GatewayDB entity table up to a staged set of rows.

This is where "upsert into GatewayDB" lives. Rules, for every path that writes:

* last writer wins by Model Garden time: each row carries ``source_ts``, the
  time of the state it holds (an extract's ``generated_at``); a staged row
  older than what the table holds is *stale* and changes nothing;
* only rows whose contract fields differ are written (no-op syncs write no
  tuples, hence no WAL);
* a full extract also tombstones live rows it no longer lists, but only rows
  whose state is older than the extract, so a row created by a later event is
  never deleted by an earlier snapshot;
* the delete guard refuses a full extract that would tombstone more than a
  fraction of the live rows, or that is empty while the table is not;
* a row whose parent is missing or deleted is rejected, never inserted;
* everything for one entity is one transaction, serialised per entity with an
  advisory lock so concurrent runs cannot interleave their writes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity, FieldType, by_name
from garden_pipeline.gatewaydb.connection import advisory_key
from garden_pipeline.gatewaydb.sql import columns, entity_table, ident, sync_table
from garden_pipeline.gatewaydb.staging import REJECTED, LandedRef
from garden_pipeline.gatewaydb.tables import DELETED_COLUMN, SYNCED_COLUMN, VERSION_COLUMN, sync_schema

SAMPLE = 5
# Compared as text so a re-scaled decimal ("1500.0" -> "1500.00") counts as a change: the gateway
# should hold Model Garden's value exactly as written.
_TEXT_COMPARED = (FieldType.MONEY, FieldType.NUMBER)


class DeleteGuardError(RuntimeError):
    """A full extract would delete too much; nothing was written."""

    def __init__(self, message: str, live: int, to_delete: int, extract_rows: int):
        super().__init__(message)
        self.live, self.to_delete, self.extract_rows = live, to_delete, extract_rows


@dataclass
class EntityCounts:
    entity: str
    mode: str
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    stale: int = 0
    live_before: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted

    def as_event_counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("inserted", "updated", "deleted", "unchanged")}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeletePolicy:
    max_fraction: float = 0.2
    min_rows: int = 0  # deletions of at most this many rows never trip the fraction test
    allow_large_delete: bool = False


def _compare_expr(entity: Entity, alias: str) -> sql.Composable:
    parts = []
    for f in entity.fields:
        if f.name == "id":
            continue
        col = sql.Identifier(alias, f.name)
        parts.append(sql.SQL("{}::text").format(col) if f.type in _TEXT_COMPARED else col)
    return sql.SQL("({})").format(sql.SQL(", ").join(parts))


def lock_entity(conn: psycopg.Connection, schema: str, entity: str) -> None:
    """Serialise writers of one entity table across processes (held until the transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("entity", schema, entity),))


def _parent_rejects(conn, schema: str, entity: Entity, stage: sql.Composable) -> bool:
    """Collect staged rows whose parent is not live in GatewayDB into temp table _garden_rej."""
    if not entity.parents:
        return False
    missing = []
    reasons = []
    for col, parent_name in entity.parents.items():
        parent = by_name(parent_name)
        cond = sql.SQL("NOT EXISTS (SELECT 1 FROM {p} p WHERE p.id = s.{c} AND p.{d} IS NULL)").format(
            p=entity_table(schema, parent), c=ident(col), d=ident(DELETED_COLUMN)
        )
        missing.append(cond)
        reasons.append(
            sql.SQL("CASE WHEN {cond} THEN format('parent %%s=%%s not found in GatewayDB (missing or deleted)', "
                    "{name}, s.{c}) END").format(cond=cond, name=sql.Literal(col), c=ident(col))
        )
    conn.execute("DROP TABLE IF EXISTS pg_temp._garden_rej")
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE _garden_rej ON COMMIT DROP AS "
            "SELECT s.id, concat_ws('; ', {reasons}) AS reason, to_jsonb(s) - '_ord' - '_rejected' AS raw "
            "FROM {stage} s WHERE NOT s.{rej} AND ({missing})"
        ).format(
            reasons=sql.SQL(", ").join(reasons),
            stage=stage,
            rej=ident(REJECTED),
            missing=sql.SQL(" OR ").join(missing),
        )
    )
    return True


def apply_landed(
    conn: psycopg.Connection,
    schema: str,
    ref: LandedRef,
    run_id: str,
    policy: DeletePolicy = DeletePolicy(),
) -> EntityCounts:
    """Apply one landed extract batch to its entity table; commits unless the batch is a dry run."""
    entity = by_name(ref.entity)
    full = ref.mode == "full"
    started = time.monotonic()
    counts = EntityCounts(entity.name, ref.mode, dry_run=ref.dry_run)
    target = entity_table(schema, entity)
    stage = ident(sync_schema(schema), ref.stage_table)
    v = ref.generated_at
    params = {"v": v}

    with conn.transaction() as tx:
        lock_entity(conn, schema, entity.name)
        exists = conn.execute("SELECT to_regclass(%s)", (f'"{sync_schema(schema)}"."{ref.stage_table}"',)).fetchone()
        if not exists or exists[0] is None:
            raise RuntimeError(
                f"the landed extract for {entity.name} (batch {ref.batch_id}) is no longer staged; "
                f"materialise extract/{entity.plural} together with gatewaydb/{entity.plural}"
            )
        counts.live_before = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(target, ident(DELETED_COLUMN))
        ).fetchone()[0]

        absent = sql.SQL(
            "t.{d} IS NULL AND t.{ver} < %(v)s AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = t.id)"
        ).format(d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN), stage=stage)
        if full:
            to_delete = conn.execute(
                sql.SQL("SELECT count(*) FROM {t} t WHERE {absent}").format(t=target, absent=absent), params
            ).fetchone()[0]
            _delete_guard(entity, counts.live_before, to_delete, ref.rows + ref.rejected, policy)

        has_rej = _parent_rejects(conn, schema, entity, stage)
        keep = sql.SQL("NOT s.{rej}").format(rej=ident(REJECTED))
        if has_rej:
            keep = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM _garden_rej r WHERE r.id = s.id)").format(keep)
            counts.rejected, rej_sample = conn.execute(
                "SELECT count(*), (array_agg(id ORDER BY id))[1:%s] FROM _garden_rej", (SAMPLE,)
            ).fetchone()
            if counts.rejected:
                counts.samples["rejected"] = rej_sample
                if not ref.dry_run:
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (run_id, entity, record_id, reason, raw) "
                            "SELECT %(run)s, %(e)s, id, %(e)s || ': ' || reason, raw FROM _garden_rej"
                        ).format(sync_table(schema, "rejected_records")),
                        {"run": run_id, "e": entity.name},
                    )
        candidates = conn.execute(
            sql.SQL("SELECT count(*) FROM {stage} s WHERE {keep}").format(stage=stage, keep=keep)
        ).fetchone()[0]

        changed = sql.SQL(
            "o.id IS NULL OR (o.{ver} <= %(v)s AND (o.{d} IS NOT NULL OR {old} IS DISTINCT FROM {new}))"
        ).format(ver=ident(VERSION_COLUMN), d=ident(DELETED_COLUMN),
                 old=_compare_expr(entity, "o"), new=_compare_expr(entity, "s"))
        newer_in_db = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {t} WHERE {ver} > %(v)s)").format(
                t=target, ver=ident(VERSION_COLUMN)), params
        ).fetchone()[0]
        if newer_in_db:
            counts.stale = conn.execute(
                sql.SQL("SELECT count(*) FROM {stage} s JOIN {t} o ON o.id = s.id WHERE {keep} AND o.{ver} > %(v)s")
                .format(stage=stage, t=target, keep=keep, ver=ident(VERSION_COLUMN)), params
            ).fetchone()[0]

        if ref.dry_run:
            ins, upd, ins_s, upd_s = conn.execute(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE o.id IS NULL), count(*) FILTER (WHERE o.id IS NOT NULL), "
                    "(array_agg(s.id ORDER BY s.id) FILTER (WHERE o.id IS NULL))[1:{n}], "
                    "(array_agg(s.id ORDER BY s.id) FILTER (WHERE o.id IS NOT NULL))[1:{n}] "
                    "FROM {stage} s LEFT JOIN {t} o ON o.id = s.id WHERE {keep} AND ({changed})"
                ).format(n=sql.Literal(SAMPLE), stage=stage, t=target, keep=keep, changed=changed),
                params,
            ).fetchone()
        else:
            names = entity.field_names
            ins, upd, ins_s, upd_s = conn.execute(
                sql.SQL(
                    """
                    WITH w AS (
                        INSERT INTO {t} AS t ({cols}, {ver}, {synced}, {d})
                        SELECT {scols}, %(v)s, now(), NULL
                        FROM {stage} s LEFT JOIN {t} o ON o.id = s.id
                        WHERE {keep} AND ({changed})
                        ON CONFLICT (id) DO UPDATE SET {sets}, {ver} = EXCLUDED.{ver},
                            {synced} = EXCLUDED.{synced}, {d} = NULL
                        RETURNING (t.xmax = 0) AS ins, t.id
                    )
                    SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins),
                           ARRAY(SELECT id FROM w WHERE ins LIMIT {n}), ARRAY(SELECT id FROM w WHERE NOT ins LIMIT {n})
                    FROM w
                    """
                ).format(
                    t=target, cols=columns(names), scols=columns(names, "s"), ver=ident(VERSION_COLUMN),
                    synced=ident(SYNCED_COLUMN), d=ident(DELETED_COLUMN), stage=stage, keep=keep, changed=changed,
                    sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(n)) for n in names if n != "id"),
                    n=sql.Literal(SAMPLE),
                ),
                params,
            ).fetchone()
        counts.inserted, counts.updated = ins, upd
        if ins_s:
            counts.samples["inserted"] = list(ins_s)
        if upd_s:
            counts.samples["updated"] = list(upd_s)
        counts.unchanged = candidates - ins - upd - counts.stale

        if full:
            if ref.dry_run:
                deleted, del_s = conn.execute(
                    sql.SQL("SELECT count(*), (array_agg(t.id ORDER BY t.id))[1:{n}] FROM {t} t WHERE {absent}")
                    .format(n=sql.Literal(SAMPLE), t=target, absent=absent), params
                ).fetchone()
            else:
                deleted, del_s = conn.execute(
                    sql.SQL(
                        "WITH d AS (UPDATE {t} t SET {d} = %(v)s, {ver} = %(v)s, {synced} = now() WHERE {absent} "
                        "RETURNING t.id) SELECT count(*), ARRAY(SELECT id FROM d LIMIT {n}) FROM d"
                    ).format(t=target, d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN),
                             synced=ident(SYNCED_COLUMN), absent=absent, n=sql.Literal(SAMPLE)),
                    params,
                ).fetchone()
            counts.deleted = deleted
            if del_s:
                counts.samples["deleted"] = list(del_s)

        counts.rejected += ref.rejected
        counts.seconds = time.monotonic() - started
        if ref.dry_run:
            raise psycopg.Rollback(tx)  # a dry run reports what it would have done and keeps nothing
        _record_success(conn, schema, entity.name, ref, run_id, counts)
    return counts


def _delete_guard(entity: Entity, live: int, to_delete: int, extract_rows: int, policy: DeletePolicy) -> None:
    if policy.allow_large_delete or to_delete == 0:
        return
    if extract_rows == 0 and live > 0:
        raise DeleteGuardError(
            f"delete guard: the full extract has no {entity.plural} while GatewayDB has {live} live; "
            f"refusing to delete them all (nothing was written). If Model Garden really is empty, "
            f"re-run with allow_large_delete: true.",
            live, to_delete, extract_rows,
        )
    limit = policy.max_fraction * live
    if to_delete > max(limit, policy.min_rows):
        raise DeleteGuardError(
            f"delete guard: the full extract would delete {to_delete} of {live} live {entity.plural} "
            f"({to_delete / live:.1%}), more than the allowed {policy.max_fraction:.0%}; nothing was written. "
            f"If this is intended, re-run with allow_large_delete: true.",
            live, to_delete, extract_rows,
        )


def _record_success(conn, schema: str, entity: str, ref: LandedRef, run_id: str, c: EntityCounts) -> None:
    """Watermark, run counts and batch state move in the same transaction as the writes."""
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {state} AS s (entity, watermark, last_full_generated_at, last_success_at, last_success_run_id, last_mode)
            VALUES (%(e)s, %(v)s, CASE WHEN %(full)s THEN %(v)s END, now(), %(run)s, %(mode)s)
            ON CONFLICT (entity) DO UPDATE SET
                watermark = GREATEST(s.watermark, EXCLUDED.watermark),
                last_full_generated_at = COALESCE(GREATEST(s.last_full_generated_at, EXCLUDED.last_full_generated_at),
                                                  s.last_full_generated_at),
                last_success_at = EXCLUDED.last_success_at,
                last_success_run_id = EXCLUDED.last_success_run_id,
                last_mode = EXCLUDED.last_mode
            """
        ).format(state=sync_table(schema, "sync_state")),
        {"e": entity, "v": ref.generated_at, "full": ref.mode == "full", "run": run_id, "mode": ref.mode},
    )
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {rc} (run_id, entity, mode, inserted, updated, deleted, unchanged, rejected, stale, watermark)
            VALUES (%(run)s, %(e)s, %(mode)s, %(i)s, %(u)s, %(d)s, %(n)s, %(r)s, %(s)s, %(v)s)
            ON CONFLICT (run_id, entity) DO UPDATE SET inserted = EXCLUDED.inserted, updated = EXCLUDED.updated,
                deleted = EXCLUDED.deleted, unchanged = EXCLUDED.unchanged, rejected = EXCLUDED.rejected,
                stale = EXCLUDED.stale, watermark = EXCLUDED.watermark, committed_at = now()
            """
        ).format(rc=sync_table(schema, "run_counts")),
        {"run": run_id, "e": entity, "mode": ref.mode, "i": c.inserted, "u": c.updated, "d": c.deleted,
         "n": c.unchanged, "r": c.rejected, "s": c.stale, "v": ref.generated_at},
    )
    conn.execute(
        sql.SQL("UPDATE {} SET applied_at = now() WHERE batch_id = %s AND entity = %s").format(
            sync_table(schema, "landed_extracts")),
        (ref.batch_id, entity),
    )


def read_watermarks(conn: psycopg.Connection, schema: str) -> dict[str, datetime | None]:
    rows = conn.execute(sql.SQL("SELECT entity, watermark FROM {}").format(sync_table(schema, "sync_state")))
    return dict(rows.fetchall())
