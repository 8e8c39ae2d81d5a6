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
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity, FieldType, by_name
from garden_pipeline.gatewaydb import first_load, untouched
from garden_pipeline.gatewaydb.connection import advisory_key
from garden_pipeline.gatewaydb.sql import columns, entity_table, ident, sync_table, temp_table
from garden_pipeline.gatewaydb.staging import REJECTED, LandedRef
from garden_pipeline.gatewaydb.tables import (
    DELETED_COLUMN,
    HARD_DELETE_TRIGGER,
    SYNCED_COLUMN,
    VERSION_COLUMN,
    sync_schema,
)

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
    seconds: float = 0.0
    dry_run: bool = False
    compared: int = 0  # extract rows compared with GatewayDB; the rest provably unchanged (untouched.py)
    samples: dict[str, list[str]] = field(default_factory=dict)


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


@dataclass
class WriteResult:
    """What write_rows did: counts, and the first ids (in id order) of each action."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    orphans: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)
    # The table was empty and this write filled it: every row in it is one this transaction inserted.
    filled_empty: bool = False


# Staged rows from which a pull skips PostgreSQL's row-by-row foreign-key checks (see _check_parents_as_a_set).
BULK_MIN_ROWS = 10_000


def _check_parents_as_a_set(conn, schema: str, entity: Entity) -> bool:
    """Let this transaction's writes to ``entity`` skip the per-row foreign-key triggers, where that is safe.

    PostgreSQL checks a foreign key with one ``SELECT ... FOR KEY SHARE`` per inserted row: for the
    450k-row subscriptions that was 7 s of a 15 s insert (auto_explain). write_rows already rejects,
    as one anti-join, every row whose parent is not live (``_orphans``), so the triggers only repeat
    it. They are skipped (``session_replication_role = replica``, until write_rows resets it) only when
    all of this holds:

    * the role may set that parameter (a superuser, or on PostgreSQL 15+ after
      ``GRANT SET ON PARAMETER session_replication_role``); otherwise nothing changes;
    * the table has no triggers of its own (the gateway team's audit or cache triggers must still fire)
      besides our hard-delete counter, which fires on DELETE and TRUNCATE only;
    * the parent tables are locked ``IN SHARE MODE`` first, so no parent can be deleted or re-keyed
      between the anti-join and the commit (readers are not blocked; parents' writers are already
      serialised behind the entity locks, which every writer takes in foreign-key order).
    """
    if not entity.parents:
        return False
    target = f'"{schema}"."{entity.table}"'
    if conn.execute("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal "
                    "AND tgname <> %s)", (target, HARD_DELETE_TRIGGER)).fetchone()[0]:
        return False
    try:
        with conn.transaction():  # a savepoint: a refused SET must not abort the sync's transaction
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        return False
    parents = sorted({by_name(p).table for p in entity.parents.values()})
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
        sql.SQL(", ").join(ident(schema, table) for table in parents)))
    return True


def _orphans(conn, schema: str, entity: Entity, src: sql.Composable, params: dict) -> int:
    """Upserts whose parent is not live in GatewayDB go to temp table _garden_orphans(id, reason, raw)."""
    temp_table(conn, "_garden_orphans", "(id text PRIMARY KEY, reason text, raw jsonb)")
    if not entity.parents:
        return 0
    missing, reasons = [], []
    for col, parent_name in entity.parents.items():
        cond = sql.SQL("NOT EXISTS (SELECT 1 FROM {p} p WHERE p.id = s.{c} AND p.{d} IS NULL)").format(
            p=entity_table(schema, by_name(parent_name)), c=ident(col), d=ident(DELETED_COLUMN)
        )
        missing.append(cond)
        reasons.append(
            sql.SQL("CASE WHEN {cond} THEN format('parent %%s=%%s not found in GatewayDB (missing or deleted)', "
                    "{name}, s.{c}) END").format(cond=cond, name=sql.Literal(col), c=ident(col))
        )
    fields = sql.SQL(", ").join(sql.SQL("{}, s.{}").format(sql.Literal(n), ident(n)) for n in entity.field_names)
    # A row that is stale anyway (GatewayDB or a tombstone already holds a newer state) is not an orphan.
    return conn.execute(
        sql.SQL(
            "INSERT INTO _garden_orphans SELECT s.id, concat_ws('; ', {reasons}), jsonb_build_object({fields}) "
            "FROM {src} s WHERE s._op = 'upsert' AND ({missing}) "
            "AND NOT EXISTS (SELECT 1 FROM {t} o WHERE o.id = s.id AND o.{ver} > s._version) "
            "AND NOT EXISTS (SELECT 1 FROM {g} g WHERE g.entity = %(entity)s AND g.id = s.id "
            "AND g.deleted_at >= s._version)"
        ).format(reasons=sql.SQL(", ").join(reasons), fields=fields, src=src, missing=sql.SQL(" OR ").join(missing),
                 t=entity_table(schema, entity), ver=ident(VERSION_COLUMN), g=sync_table(schema, "tombstones")),
        params,
    ).rowcount


def _tally(conn, statement: sql.Composable, params: dict, keep_ids: bool, result: WriteResult) -> None:
    """Run a statement returning (id, action); add its counts and first ids per action to ``result``.

    The counting happens in the statement itself: at a million rows, copying every written id into
    a temp table and sorting it afterwards cost more than half a second per entity.
    """
    keep = sql.SQL(", k AS (INSERT INTO _garden_written SELECT id, action FROM w)") if keep_ids else sql.SQL("")
    rows = conn.execute(sql.SQL(
        "WITH w AS ({statement}){keep}, c AS (SELECT action, count(*) AS n FROM w GROUP BY action) "
        "SELECT action, n, ARRAY(SELECT id FROM w WHERE w.action = c.action ORDER BY id LIMIT {sample}) FROM c"
    ).format(statement=statement, keep=keep, sample=sql.Literal(SAMPLE)), params).fetchall()
    for action, n, sample in rows:
        if action in ("inserted", "updated", "deleted"):
            setattr(result, action, getattr(result, action) + n)
            result.samples[action] = sorted([*result.samples.get(action, []), *sample])[:SAMPLE]


def write_rows(
    conn: psycopg.Connection,
    schema: str,
    entity: Entity,
    src: sql.Composable,
    params: dict,
    *,
    bump_version: bool,
    dry_run: bool = False,
    keep_ids: bool = False,
    bulk: bool = False,
) -> WriteResult:
    """The one apply function both paths share: bring ``entity``'s table up to the rows of ``src``.

    ``src`` is a relation with the entity's fields plus ``_version`` (Model Garden time of that state)
    and ``_op`` ('upsert' or 'delete'), at most one row per id. A row is written only when it is newer
    than what the table holds (or, with ``bump_version`` false, equally new but different); a delete
    tombstones the row, or records a tombstone for an id never seen; a row whose parent is not live is
    left out and listed in ``_garden_orphans``. With ``keep_ids`` the written ids and their actions are
    also left in temp table ``_garden_written(id, action)``. With ``bulk`` (many rows), parents are
    checked as a set only, where that is safe (``_check_parents_as_a_set``). Must run inside a
    transaction holding the entity lock.
    """
    result = WriteResult()
    set_checked = bulk and not dry_run and _check_parents_as_a_set(conn, schema, entity)
    target = entity_table(schema, entity)
    ghosts = sync_table(schema, "tombstones")
    names = entity.field_names
    p = {**params, "entity": entity.name}
    result.orphans = _orphans(conn, schema, entity, src, p)
    if keep_ids:
        temp_table(conn, "_garden_written", "(id text, action text)")
    newer = sql.SQL("o.{ver} < s._version").format(ver=ident(VERSION_COLUMN))
    if not bump_version:
        # A snapshot re-applied at the same version still repairs a row that differs from it.
        newer = sql.SQL("o.{ver} <= s._version AND (o.{d} IS NOT NULL OR {old} IS DISTINCT "
                        "FROM {new})").format(ver=ident(VERSION_COLUMN), d=ident(DELETED_COLUMN),
                                              old=_compare_expr(entity, "o"), new=_compare_expr(entity, "s"))
    upsert_when = sql.SQL(
        "s._op = 'upsert' AND NOT EXISTS (SELECT 1 FROM _garden_orphans x WHERE x.id = s.id) AND ("
        "(o.id IS NULL AND NOT EXISTS (SELECT 1 FROM {g} g WHERE g.entity = %(entity)s AND g.id = s.id "
        "AND g.deleted_at >= s._version)) OR (o.id IS NOT NULL AND {newer}))"
    ).format(g=ghosts, newer=newer)
    delete_when = sql.SQL("s._op = 'delete' AND o.id IS NOT NULL AND o.{ver} < s._version").format(
        ver=ident(VERSION_COLUMN))
    fmt = dict(t=target, g=ghosts, src=src, cols=columns(names), scols=columns(names, "s"),
               ver=ident(VERSION_COLUMN), synced=ident(SYNCED_COLUMN), d=ident(DELETED_COLUMN),
               upsert_when=upsert_when, delete_when=delete_when,
               sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(n)) for n in names if n != "id"))
    # Each statement returns (id, action); _tally counts them (and, for the event path, keeps the ids).
    if dry_run:
        _tally(conn, sql.SQL(
            """
            SELECT s.id, CASE WHEN s._op = 'delete' THEN 'deleted' WHEN o.id IS NULL THEN 'inserted' ELSE 'updated'
                   END AS action
            FROM {src} s LEFT JOIN {t} o ON o.id = s.id
            WHERE ({upsert_when}) OR ({delete_when} AND o.{d} IS NULL)
            """).format(**fmt), p, keep_ids, result)
        return result
    upsert = sql.SQL(
        """
        INSERT INTO {t} AS t ({cols}, {ver}, {synced}, {d})
        SELECT {scols}, s._version, now(), NULL
        FROM {src} s LEFT JOIN {t} o ON o.id = s.id
        WHERE {upsert_when}
        """).format(**fmt)
    if bulk and not keep_ids and conn.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {t})").format(t=target)).fetchone()[0]:
        # Into an empty table every row is new: a plain INSERT spares ON CONFLICT's speculative insertion
        # (450k subscriptions: 5.5 s against 8.2 s), and the table itself then lists what was inserted,
        # so no RETURNING of every id to count them (0.7 s more). The entity lock keeps the table ours.
        with first_load.indexes_built_after(conn, schema, entity):
            result.inserted = conn.execute(upsert, p).rowcount
        result.filled_empty = True
        result.samples["inserted"] = [r[0] for r in conn.execute(
            sql.SQL("SELECT id FROM {t} ORDER BY id LIMIT {n}").format(t=target, n=sql.Literal(SAMPLE)))]
        first_load.analyse(conn, target)  # the statistics still describe an empty table
    else:
        _tally(conn, sql.SQL(
            """{upsert}
            ON CONFLICT (id) DO UPDATE SET {sets}, {ver} = EXCLUDED.{ver}, {synced} = EXCLUDED.{synced}, {d} = NULL
            RETURNING t.id, CASE WHEN t.xmax = 0 THEN 'inserted' ELSE 'updated' END AS action
            """).format(upsert=upsert, **fmt), p, keep_ids, result)
        # A table below the bulk size filled here has no statistics either until autovacuum comes (never,
        # where it is off): the next full apply then planned its 1,000 models as one row and anti-joined
        # them to the staging table in a nested loop (66 ms, not 1). reltuples is -1 until the first ANALYZE.
        if result.inserted and conn.execute("SELECT reltuples < 0 FROM pg_class WHERE oid = %s::regclass",
                                            (target.as_string(conn),)).fetchone()[0]:
            conn.execute(sql.SQL("ANALYZE {t}").format(t=target))
    _tally(conn, sql.SQL(
        """
        UPDATE {t} t SET {d} = COALESCE(t.{d}, s._version), {ver} = s._version, {synced} = now()
        FROM {src} s JOIN {t} o ON o.id = s.id
        WHERE t.id = s.id AND {delete_when}
        RETURNING t.id, CASE WHEN o.{d} IS NULL THEN 'deleted' ELSE 'tombstone' END AS action
        """).format(**fmt), p, keep_ids, result)
    _tally(conn, sql.SQL(
        """
        INSERT INTO {g} AS g (entity, id, deleted_at)
        SELECT %(entity)s, s.id, s._version FROM {src} s
        WHERE s._op = 'delete' AND NOT EXISTS (SELECT 1 FROM {t} o WHERE o.id = s.id)
        ON CONFLICT (entity, id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at
        WHERE g.deleted_at < EXCLUDED.deleted_at
        RETURNING g.id, 'tombstone' AS action
        """).format(**fmt), p, keep_ids, result)
    if set_checked:
        conn.execute("SET LOCAL session_replication_role = origin")  # later statements: every trigger again
    return result


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
    params = {"v": ref.generated_at}

    # The ledger names this apply's transaction as the writer of what it wrote (untouched.py). Inside
    # someone else's transaction that id is theirs too: whatever they write after us would pass for ours.
    top_level = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction() as tx:
        lock_entity(conn, schema, entity.name)
        now = untouched.begin(conn, schema, entity) if full and not ref.dry_run and top_level else None
        exists = conn.execute("SELECT to_regclass(%s)", (f'"{sync_schema(schema)}"."{ref.stage_table}"',)).fetchone()
        if not exists or exists[0] is None:
            raise RuntimeError(
                f"the landed extract for {entity.name} (batch {ref.batch_id}) is no longer staged; "
                f"materialise extract/{entity.plural} together with gatewaydb/{entity.plural}"
            )
        # Compare only the rows that may differ, where the apply ledger proves the others untouched.
        found = None if now is None else untouched.candidates(conn, schema, entity, ref.stage_table, ref.batch_id,
                                                              ref.generated_at, now, ref.rows)
        narrowed = found is not None
        live = found.live if narrowed else None
        absent = _absent(schema, entity, ref.stage_table, narrowed)
        probes = untouched.count_candidates(conn) if narrowed else ref.rows
        if full and ref.dry_run:
            to_delete, live = delete_preview(conn, schema, entity.name, ref.stage_table, ref.generated_at)
            check_delete_guard(entity, live, to_delete, ref.rows + ref.rejected, policy)
            counts.deleted, del_s = conn.execute(
                sql.SQL("SELECT count(*), (array_agg(t.id ORDER BY t.id))[1:{n}] FROM {t} t WHERE {absent}")
                .format(n=sql.Literal(SAMPLE), t=target, absent=absent), params
            ).fetchone()
        elif full:
            # Tombstone first, then judge: the guard's count is the UPDATE's own, so the anti-join of
            # the whole table against the extract runs once, not twice (a preview, then the write). If
            # the guard refuses, raising rolls the UPDATE back with the rest: nothing is written. The
            # rows it touches are all absent from the extract, so the upserts below never see them.
            if live is None:
                live = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {d} IS NULL").format(
                    t=target, d=ident(DELETED_COLUMN))).fetchone()[0]
            with untouched.index_probes(conn, probes, ref.rows):
                counts.deleted, del_s = conn.execute(
                    sql.SQL(
                        "WITH d AS (UPDATE {t} t SET {d} = %(v)s, {ver} = %(v)s, {synced} = now() WHERE {absent} "
                        "RETURNING t.id) SELECT count(*), ARRAY(SELECT id FROM d ORDER BY id LIMIT {n}) FROM d"
                    ).format(t=target, d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN),
                             synced=ident(SYNCED_COLUMN), absent=absent, n=sql.Literal(SAMPLE)),
                    params,
                ).fetchone()
            check_delete_guard(entity, live, counts.deleted, ref.rows + ref.rejected, policy)
        if full and del_s:
            counts.samples["deleted"] = list(del_s)

        # The extract's rows, all stamped with its generated_at: the state as of that snapshot.
        src = sql.SQL("(SELECT s.*, %(v)s::timestamptz AS _version, 'upsert'::text AS _op FROM {stage} s "
                      "WHERE NOT s.{rej})").format(stage=untouched.staged_rows() if narrowed else stage,
                                                   rej=ident(REJECTED))
        with untouched.index_probes(conn, probes, ref.rows):
            written = write_rows(conn, schema, entity, src, params, bump_version=False, dry_run=ref.dry_run,
                                 bulk=ref.rows >= BULK_MIN_ROWS)
        counts.inserted, counts.updated = written.inserted, written.updated
        counts.samples.update(written.samples)
        if written.orphans:
            counts.rejected = written.orphans
            counts.samples["rejected"] = [r[0] for r in conn.execute(
                "SELECT id FROM _garden_orphans ORDER BY id LIMIT %s", (SAMPLE,)).fetchall()]
            if not ref.dry_run:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (run_id, entity, record_id, reason, raw) "
                        "SELECT %(run)s, %(e)s, id, %(e)s || ': ' || reason, raw FROM _garden_orphans"
                    ).format(sync_table(schema, "rejected_records")),
                    {"run": run_id, "e": entity.name},
                )
        # Rows newer than the extract: a narrowed apply read that already (its writes never make one), and a
        # table this apply filled holds only the extract's rows.
        newer = False if written.filled_empty else found.newer if narrowed else conn.execute(sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE {ver} > %(v)s)").format(t=target, ver=ident(VERSION_COLUMN)),
            params).fetchone()[0]
        if newer:
            stale = sql.SQL("SELECT s.id FROM {src} s JOIN {t} o ON o.id = s.id WHERE o.{ver} > %(v)s").format(
                src=src, t=target, ver=ident(VERSION_COLUMN))
            counts.stale = conn.execute(sql.SQL("SELECT count(*) FROM ({}) x").format(stale), params).fetchone()[0]
            if now is not None:
                untouched.unvouch(conn, schema, ref.stage_table, stale, params, narrowed)
        if now is not None:
            untouched.unvouch(conn, schema, ref.stage_table, sql.SQL("SELECT id FROM _garden_orphans"), {}, narrowed)
            untouched.record(conn, schema, entity, ref.stage_table, ref.batch_id, ref.generated_at, now, narrowed,
                             ref.rows, filled=written.filled_empty, reached=found.reached if narrowed else True)
        elif full and not ref.dry_run:
            untouched.forget(conn, schema, entity.name, ref.batch_id)  # no ledger it could vouch for
        counts.compared = ref.rows if not narrowed else conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE staged").format(ident(untouched.CANDIDATES))).fetchone()[0]
        counts.unchanged = ref.rows - counts.rejected - counts.inserted - counts.updated - counts.stale

        counts.rejected += ref.rejected
        counts.seconds = time.monotonic() - started
        if ref.dry_run:
            raise psycopg.Rollback(tx)  # a dry run reports what it would have done and keeps nothing
        _record_success(conn, schema, entity.name, ref, run_id, counts)
    return counts


def _absent(schema: str, entity: Entity, stage_table: str, narrowed: bool = False) -> sql.Composable:
    """Live rows of ``t`` older than the extract (%(v)s) and missing from its staging table.

    ``narrowed``: only candidates can be missing (``untouched``), and they know whether they are staged.
    """
    missing = untouched.maybe_absent("t") if narrowed else sql.SQL(
        "NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = t.id)").format(stage=ident(sync_schema(schema), stage_table))
    return sql.SQL("t.{d} IS NULL AND t.{ver} < %(v)s AND {missing}").format(
        d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN), missing=missing)


def delete_preview(conn: psycopg.Connection, schema: str, entity: str, stage_table: str,
                   generated_at: datetime, batch_id: str | None = None) -> tuple[int, int]:
    """(live rows a full apply of this staged extract would tombstone, live rows) - the guard's inputs.

    With ``batch_id``, the batch's apply ledger may narrow the search to the rows touched since
    (``untouched``), as the apply itself will.
    """
    e = by_name(entity)
    target = entity_table(schema, e)
    with conn.transaction():
        found = None if batch_id is None else untouched.absent(
            conn, schema, e, stage_table, batch_id, generated_at, untouched.begin(conn, schema, e, own_xid=False))
        if found is not None:
            return found
        # Two statements, not one with count(*) FILTER (... NOT EXISTS ...): inside FILTER the subquery runs
        # once per row against the unindexed staging table; in WHERE it becomes one hash anti-join.
        absent = conn.execute(sql.SQL("SELECT count(*) FROM {t} t WHERE {absent}").format(
            t=target, absent=_absent(schema, e, stage_table)), {"v": generated_at}).fetchone()[0]
        live = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {d} IS NULL").format(
            t=target, d=ident(DELETED_COLUMN))).fetchone()[0]
    return absent, live


def delete_guard_error(entity: Entity, live: int, to_delete: int, extract_rows: int,
                       policy: DeletePolicy) -> DeleteGuardError | None:
    """The delete guard's verdict: the error a full apply would stop with, or None if it may go ahead."""
    if policy.allow_large_delete or to_delete == 0:
        return None
    if extract_rows == 0 and live > 0:
        return DeleteGuardError(
            f"delete guard: the full extract has no {entity.plural} while GatewayDB has {live} live; "
            f"refusing to delete them all (nothing was written). If Model Garden really is empty, "
            f"re-run with allow_large_delete: true.",
            live, to_delete, extract_rows,
        )
    if to_delete > max(policy.max_fraction * live, policy.min_rows):
        return DeleteGuardError(
            f"delete guard: the full extract would delete {to_delete} of {live} live {entity.plural} "
            f"({to_delete / live:.1%}), more than the allowed {policy.max_fraction:.0%}; nothing was written. "
            f"If this is intended, re-run with allow_large_delete: true.",
            live, to_delete, extract_rows,
        )
    return None


def check_delete_guard(entity: Entity, live: int, to_delete: int, extract_rows: int, policy: DeletePolicy) -> None:
    error = delete_guard_error(entity, live, to_delete, extract_rows, policy)
    if error is not None:
        raise error


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
