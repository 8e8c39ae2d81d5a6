"""Applying a batch of inbox events to GatewayDB, through the same write_rows as the pull path.

One transaction per batch. Every inbox row in the batch ends in exactly one
state: applied, stale (older than what GatewayDB holds, or superseded in the
batch), duplicate (the same change as one already applied), parked (its parent
is not live yet; retried with later batches, dead-lettered after
``park_timeout``) or dead_lettered (it failed to apply; the rest still apply).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE, Entity
from garden_pipeline.gatewaydb.apply import lock_entity, write_rows
from garden_pipeline.gatewaydb.connection import advisory_key
from garden_pipeline.gatewaydb.sql import entity_table, ident, sync_table
from garden_pipeline.gatewaydb.tables import VERSION_COLUMN

STATES = ("applied", "stale", "duplicate", "parked", "dead_lettered")


@dataclass
class BatchResult:
    events: int = 0
    states: Counter = field(default_factory=Counter)
    per_entity: dict[str, dict[str, int]] = field(default_factory=dict)
    dead_letter_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def wrote(self) -> bool:
        return any(sum(c.values()) for c in self.per_entity.values())


def _load(conn, schema: str, min_id: int, max_id: int | None, limit: int | None) -> int:
    """Copy the batch's open inbox rows into temp table _garden_batch (locking them)."""
    conn.execute("DROP TABLE IF EXISTS pg_temp._garden_batch")
    conn.execute(
        sql.SQL(
            """
            CREATE TEMP TABLE _garden_batch ON COMMIT DROP AS
            SELECT id AS inbox_id, entity_type, entity_id, event_type, event_ts, payload, state AS prior_state,
                   parked_since, NULL::text AS outcome, NULL::text AS reason
            FROM {inbox}
            WHERE (state = 'parked' OR (state = 'pending' AND id > %(lo)s AND (%(hi)s::bigint IS NULL OR id <= %(hi)s)))
            ORDER BY id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
            """
        ).format(inbox=sync_table(schema, "inbox")),
        {"lo": min_id, "hi": max_id, "limit": limit},
    )
    conn.execute("CREATE INDEX ON _garden_batch (entity_type, entity_id)")
    return conn.execute("SELECT count(*) FROM _garden_batch").fetchone()[0]


def _winners(conn, entity: Entity, schema: str) -> None:
    """Newest event per id (a delete wins a tie) into _garden_src; the others are settled now."""
    conn.execute(
        sql.SQL(
            """
            WITH ranked AS (
                SELECT inbox_id, entity_id, event_type, event_ts,
                       first_value(event_ts) OVER w AS top_ts, first_value(event_type) OVER w AS top_type,
                       row_number() OVER w AS rn
                FROM _garden_batch WHERE entity_type = %(e)s
                WINDOW w AS (PARTITION BY entity_id ORDER BY event_ts DESC, (event_type = 'DELETED') DESC,
                             inbox_id DESC)
            )
            UPDATE _garden_batch b SET
                outcome = CASE WHEN r.event_ts = r.top_ts AND r.event_type = r.top_type THEN 'duplicate'
                               ELSE 'stale' END,
                reason = 'superseded by a newer event for the same entity in this batch'
            FROM ranked r WHERE b.inbox_id = r.inbox_id AND r.rn > 1
            """
        ),
        {"e": entity.name},
    )
    conn.execute("DROP TABLE IF EXISTS pg_temp._garden_src")
    fields = sql.SQL(", ").join(
        sql.SQL("b.entity_id AS id") if n == "id" else sql.SQL("(r).{}").format(ident(n)) for n in entity.field_names
    )
    select = sql.SQL(
        """
        SELECT {fields}, b.event_ts AS _version,
               CASE WHEN b.event_type = 'DELETED' THEN 'delete' ELSE 'upsert' END AS _op, b.inbox_id AS _inbox_id
        FROM (SELECT *, jsonb_populate_record(NULL::{t}, payload) AS r FROM _garden_batch
              WHERE entity_type = %(e)s AND outcome IS NULL AND {only}) b
        """
    )
    fmt = dict(fields=fields, t=entity_table(schema, entity))
    try:
        with conn.transaction():  # savepoint: one payload PostgreSQL cannot read must not fail the batch
            conn.execute(sql.SQL("CREATE TEMP TABLE _garden_src ON COMMIT DROP AS {}").format(
                select.format(**fmt, only=sql.SQL("true"))), {"e": entity.name})
        return
    except psycopg.Error:
        pass
    conn.execute(sql.SQL("CREATE TEMP TABLE _garden_src ON COMMIT DROP AS {}").format(
        select.format(**fmt, only=sql.SQL("false"))), {"e": entity.name})
    for (inbox_id,) in conn.execute(
        "SELECT inbox_id FROM _garden_batch WHERE entity_type = %s AND outcome IS NULL ORDER BY inbox_id",
        (entity.name,),
    ).fetchall():
        try:
            with conn.transaction():
                conn.execute(sql.SQL("INSERT INTO _garden_src {}").format(
                    select.format(**fmt, only=sql.SQL("inbox_id = {}").format(sql.Literal(inbox_id)))),
                    {"e": entity.name})
        except psycopg.Error as exc:
            _dead_letter(conn, inbox_id, exc)


def _dead_letter(conn, inbox_id: int, exc: Exception) -> str:
    reason = f"failed to apply: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    conn.execute("UPDATE _garden_batch SET outcome = 'dead_lettered', reason = %s WHERE inbox_id = %s",
                 (reason, inbox_id))
    return reason


def _apply_entity(conn, schema: str, entity: Entity, op: str) -> tuple[dict, list[tuple[int, str]]]:
    """write_rows for one entity's winners of one kind; isolates poison events. Returns counts, dead letters."""
    src = sql.SQL("(SELECT * FROM _garden_src WHERE _op = {op})").format(op=sql.Literal(op))
    dead: list[tuple[int, str]] = []
    try:
        with conn.transaction():  # savepoint: a poison event must not take the batch down
            written = write_rows(conn, schema, entity, src, {}, bump_version=True, keep_ids=True)
            _settle_from_write(conn, schema, entity, op)
        return {"inserted": written.inserted, "updated": written.updated, "deleted": written.deleted}, dead
    except psycopg.Error:
        pass
    totals = Counter()
    for (inbox_id,) in conn.execute(
        sql.SQL("SELECT _inbox_id FROM _garden_src WHERE _op = {op} ORDER BY _inbox_id").format(op=sql.Literal(op))
    ).fetchall():
        one = sql.SQL("(SELECT * FROM _garden_src WHERE _inbox_id = {i})").format(i=sql.Literal(inbox_id))
        try:
            with conn.transaction():
                written = write_rows(conn, schema, entity, one, {}, bump_version=True, keep_ids=True)
                _settle_from_write(conn, schema, entity, op, inbox_id)
            totals.update(inserted=written.inserted, updated=written.updated, deleted=written.deleted)
        except psycopg.Error as exc:
            dead.append((inbox_id, _dead_letter(conn, inbox_id, exc)))
    return dict(totals), dead


def _settle_from_write(conn, schema: str, entity: Entity, op: str, only: int | None = None) -> None:
    """Outcome of each winner: applied if written, parked if orphaned, else duplicate or stale."""
    conn.execute(
        sql.SQL(
            """
            UPDATE _garden_batch b SET
                outcome = CASE
                    WHEN EXISTS (SELECT 1 FROM _garden_written w WHERE w.id = s.id) THEN 'applied'
                    WHEN x.id IS NOT NULL THEN 'parked'
                    WHEN o.{ver} = s._version OR g.deleted_at = s._version THEN 'duplicate'
                    ELSE 'stale' END,
                reason = CASE
                    WHEN EXISTS (SELECT 1 FROM _garden_written w WHERE w.id = s.id) THEN NULL
                    WHEN x.id IS NOT NULL THEN x.reason
                    WHEN o.{ver} = s._version OR g.deleted_at = s._version THEN 'GatewayDB already holds this change'
                    ELSE 'GatewayDB already holds a newer state' END
            FROM _garden_src s
            LEFT JOIN _garden_orphans x ON x.id = s.id
            LEFT JOIN {t} o ON o.id = s.id
            LEFT JOIN {g} g ON g.entity = %(e)s AND g.id = s.id
            WHERE b.inbox_id = s._inbox_id AND s._op = %(op)s AND (%(only)s::bigint IS NULL OR s._inbox_id = %(only)s)
            """
        ).format(ver=ident(VERSION_COLUMN), t=entity_table(schema, entity), g=sync_table(schema, "tombstones")),
        {"e": entity.name, "op": op, "only": only},
    )


def apply_inbox_batch(
    conn: psycopg.Connection,
    schema: str,
    run_id: str,
    min_id: int = 0,
    max_id: int | None = None,
    limit: int | None = None,
    park_timeout: timedelta = timedelta(hours=1),
) -> BatchResult:
    """Apply pending inbox rows with ``min_id < id <= max_id`` plus every parked row, in one transaction."""
    started = time.monotonic()
    result = BatchResult()
    with conn.transaction():
        # One batch at a time; entity locks in foreign-key order, as the pull path takes them one by one.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("events", schema),))
        result.events = _load(conn, schema, min_id, max_id, limit)
        if not result.events:
            return result
        for entity in CATALOGUE:
            lock_entity(conn, schema, entity.name)
        present = {r[0] for r in conn.execute("SELECT DISTINCT entity_type FROM _garden_batch").fetchall()}
        counts: dict[str, Counter] = {e.name: Counter() for e in CATALOGUE if e.name in present}
        srcs = {}
        for entity in CATALOGUE:  # upserts: parents first
            if entity.name not in present:
                continue
            _winners(conn, entity, schema)
            conn.execute(f"ALTER TABLE _garden_src RENAME TO _garden_src_{entity.name}")
            srcs[entity.name] = f"_garden_src_{entity.name}"
        for op, order in (("upsert", CATALOGUE), ("delete", tuple(reversed(CATALOGUE)))):  # deletes: children first
            for entity in order:
                if entity.name not in present:
                    continue
                conn.execute(f"ALTER TABLE {srcs[entity.name]} RENAME TO _garden_src")
                written, dead = _apply_entity(conn, schema, entity, op)
                conn.execute(f"ALTER TABLE _garden_src RENAME TO {srcs[entity.name]}")
                counts[entity.name].update(written)
                result.dead_letter_reasons += [r for _, r in dead][:5]
        _expire_parked(conn, park_timeout)
        _write_back(conn, schema, run_id)
        result.states = Counter(dict(conn.execute(
            "SELECT outcome, count(*) FROM _garden_batch GROUP BY outcome").fetchall()))
        result.per_entity = {e: {k: c.get(k, 0) for k in ("inserted", "updated", "deleted")}
                             for e, c in counts.items()}
        _record_counts(conn, schema, run_id, result)
    result.seconds = time.monotonic() - started
    return result


def _expire_parked(conn, park_timeout: timedelta) -> None:
    conn.execute(
        """
        UPDATE _garden_batch SET outcome = 'dead_lettered',
               reason = 'parked longer than ' || %(t)s || ': ' || coalesce(reason, 'parent missing')
        WHERE outcome = 'parked' AND coalesce(parked_since, now()) < now() - %(t)s::interval
        """,
        {"t": f"{int(park_timeout.total_seconds())} seconds"},
    )


def _write_back(conn, schema: str, run_id: str) -> None:
    conn.execute(
        sql.SQL(
            """
            UPDATE {inbox} i SET state = b.outcome, state_reason = b.reason, attempts = i.attempts + 1,
                   run_id = %(run)s,
                   parked_since = CASE WHEN b.outcome = 'parked' THEN coalesce(i.parked_since, now()) END,
                   settled_at = CASE WHEN b.outcome = 'parked' THEN NULL ELSE now() END
            FROM _garden_batch b WHERE i.id = b.inbox_id
            """
        ).format(inbox=sync_table(schema, "inbox")),
        {"run": run_id},
    )
    missing = conn.execute("SELECT count(*) FROM _garden_batch WHERE outcome IS NULL").fetchone()[0]
    assert missing == 0, f"{missing} inbox rows left without an outcome"


def _record_counts(conn, schema: str, run_id: str, result: BatchResult) -> None:
    for entity, c in result.per_entity.items():
        conn.execute(
            sql.SQL(
                """
                INSERT INTO {rc} (run_id, entity, mode, inserted, updated, deleted, unchanged, rejected, stale)
                VALUES (%(run)s, %(e)s, 'events', %(i)s, %(u)s, %(d)s, 0, 0, %(s)s)
                ON CONFLICT (run_id, entity) DO UPDATE SET inserted = {rc}.inserted + EXCLUDED.inserted,
                    updated = {rc}.updated + EXCLUDED.updated, deleted = {rc}.deleted + EXCLUDED.deleted,
                    stale = {rc}.stale + EXCLUDED.stale, committed_at = now()
                """
            ).format(rc=sync_table(schema, "run_counts")),
            {"run": run_id, "e": entity, "i": c["inserted"], "u": c["updated"], "d": c["deleted"],
             "s": conn.execute("SELECT count(*) FROM _garden_batch WHERE entity_type = %s AND outcome = 'stale'",
                               (entity,)).fetchone()[0]},
        )
