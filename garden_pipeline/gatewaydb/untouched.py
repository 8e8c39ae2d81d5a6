"""Rows nobody touched since the last full apply: what lets a full apply compare only the rest.

A full apply brings GatewayDB up to the whole extract, comparing every staged row, because that is what
repairs a manual edit. When the landing carried most rows over (``carry_over``), those rows are byte for
byte what the previous full extract staged; if GatewayDB's copy of them is also untouched since that
extract was applied, comparing them again can only find them equal. At a million rows that was most of
a no-change sync's apply (three 450k-row hash joins per big entity).

So every full apply records a ledger row for its batch (``<schema>_sync.apply_ledger``): its
transaction id, the xmin of its first snapshot, the hard-delete count, and the live ids its staging
table does not vouch for (``unlisted``: rows newer than the extract, orphans, stale or rejected rows,
rows landed one by one). A landing that takes the staging table over re-keys that row to the new batch
and adds the ids it deleted and did not stage again (``gone``: no longer in the extract, or only as a
rejected row). The next apply then compares only the *candidates*:

* staged rows the landing wrote (their ``xmin`` is not older than the landing's first snapshot);
* GatewayDB rows whose ``xmin`` is neither the last apply's transaction nor older than its first
  snapshot: anything written since, by events, repair, another batch or by hand;
* the ``unlisted`` and ``gone`` ids, and the children of parents that stopped being live since.

Why the rest is provably unchanged: a row version's ``xmin`` only comes from the transaction that wrote
it, so a row whose ``xmin`` is older than the last apply's snapshot was seen by that apply's compare,
and the apply either wrote it (``xmin`` = its own id) or found it equal. What ``xmin`` cannot show is a
row that is no longer there: a statement trigger counts DELETE and TRUNCATE statements (migration
0004), and a changed count (of the entity or a parent) means compare everything. Everything unsure
counts as touched: a row whose ``xmin`` reads 2 (a frozen row on servers older than 9.4; since then a
frozen row keeps its writer's id, and a writer older than 2^31 transactions is older than any ledger
this trusts, so comparing its id modulo 2^32 can only err towards "touched"), rows of transactions still running at a
snapshot, a ledger older than a billion transactions, an extract older than the ledger's, a missing or
disabled trigger, or more candidates than half the rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity, by_name
from garden_pipeline.gatewaydb.sql import entity_table, ident, sync_table, temp_table
from garden_pipeline.gatewaydb.tables import DELETED_COLUMN, HARD_DELETE_TRIGGER, VERSION_COLUMN, sync_schema
from garden_pipeline.gatewaydb.tables import DIGEST_COLUMN as DIGEST

CANDIDATES = "_garden_candidates"  # temp table: (id, staged, vouched) of the rows this apply compares
STAGED = "_garden_staged"  # temp table: the staged rows among them
MAX_LISTED = 100_000  # beyond this many unlisted or gone ids the ledger says "unknown": compare everything
MAX_XID_AGE = 1_000_000_000  # 32-bit xmin comparisons (age()) stay exact far below 2^31 transactions
_FROZEN = sql.SQL("'2'::xid")  # what xmin reads on a frozen row: its writer is no longer known


@dataclass(frozen=True)
class ApplySnapshot:
    """This apply's own transaction id, first snapshot xmin and hard-delete count (entity + parents)."""

    xid: int
    snap_xmin: int
    hard_deletes: int


@dataclass(frozen=True)
class Ledger:
    generated_at: datetime
    apply_xid: int
    snap_xmin: int
    hard_deletes: int
    unlisted: list[str] | None
    land_snap_xmin: int | None
    gone: list[str] | None


def _watched(entity: Entity) -> list[str]:
    return [entity.name, *sorted(set(entity.parents.values()))]


def begin(conn: psycopg.Connection, schema: str, entity: Entity, own_xid: bool = True) -> ApplySnapshot:
    """Take this apply's snapshot; must be its first statement after the entity lock (one statement, so
    the hard-delete count is read as of exactly that snapshot). Without ``own_xid`` (a read-only preview)
    ``xid`` is the snapshot's xmax, only good for judging how old a ledger is."""
    xid = "pg_current_xact_id()" if own_xid else "pg_snapshot_xmax(pg_current_snapshot())"
    row = conn.execute(
        sql.SQL("SELECT " + xid + "::text::bigint, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                "(SELECT COALESCE(sum(n), 0)::bigint FROM {h} WHERE entity = ANY(%s))").format(
            h=sync_table(schema, "hard_deletes")), (_watched(entity),)).fetchone()
    return ApplySnapshot(*row)


def read_ledger(conn: psycopg.Connection, schema: str, entity: str, batch_id: str) -> Ledger | None:
    row = conn.execute(
        sql.SQL("SELECT generated_at, apply_xid, snap_xmin, hard_deletes, unlisted, land_snap_xmin, gone "
                "FROM {} WHERE batch_id = %s AND entity = %s").format(sync_table(schema, "apply_ledger")),
        (batch_id, entity)).fetchone()
    return Ledger(*row) if row else None


def _clean(alias: str, ledger_xid: bool) -> sql.Composable:
    """Row ``alias`` provably unwritten since the ledger's apply (params %(a)s, %(snap)s)."""
    own = sql.SQL("{a}.xmin = xid(%(a)s::text::xid8) OR ").format(a=ident(alias)) if ledger_xid else sql.SQL("")
    return sql.SQL("({own}({a}.xmin <> {frozen} AND age({a}.xmin) > age(xid(%(snap)s::text::xid8))))").format(
        own=own, a=ident(alias), frozen=_FROZEN)


def _usable(conn, schema: str, entity: Entity, generated_at: datetime, ledger: Ledger | None,
            now: ApplySnapshot) -> bool:
    if ledger is None or ledger.unlisted is None or ledger.gone is None or ledger.land_snap_xmin is None:
        return False
    if generated_at < ledger.generated_at or now.hard_deletes != ledger.hard_deletes:
        return False
    if now.xid - min(ledger.snap_xmin, ledger.land_snap_xmin) > MAX_XID_AGE:
        return False
    tables = [f'"{schema}"."{by_name(n).table}"' for n in _watched(entity)]
    armed = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = %s AND tgenabled = 'A' AND tgrelid = ANY(%s::regclass[])",
        (HARD_DELETE_TRIGGER, tables)).fetchone()[0]
    return armed == len(tables)


def _narrowing(conn: psycopg.Connection, schema: str, entity: Entity, batch_id: str, generated_at: datetime,
               now: ApplySnapshot) -> dict | None:
    """The batch's ledger as the narrowing queries' parameters (``_clean``'s, the listed ids, the extract's
    time); None if it cannot narrow (``_usable``)."""
    ledger = read_ledger(conn, schema, entity.name, batch_id)
    if not _usable(conn, schema, entity, generated_at, ledger, now):
        return None
    return {"a": str(ledger.apply_xid), "snap": str(ledger.snap_xmin), "land": str(ledger.land_snap_xmin),
            "listed": [*ledger.unlisted, *ledger.gone], "v": generated_at}


@dataclass(frozen=True)
class Narrowed:
    """Read in the same pass over the entity table that finds the touched rows."""

    live: int  # rows not tombstoned: the delete guard's base
    newer: bool  # some row holds a state newer than the extract (the apply then counts stale rows)
    # Some row holds a state as new as the extract or newer. If none does, the tombstoning leaves no candidate
    # the extract lacks live (it takes every live one older than the extract), so ``record`` need not look.
    reached: bool


def candidates(conn: psycopg.Connection, schema: str, entity: Entity, stage_table: str, batch_id: str,
               generated_at: datetime, now: ApplySnapshot, rows: int) -> Narrowed | None:
    """Fill temp tables with what this apply must compare and return what the same pass over the table
    read (``Narrowed``); None (and nothing made): compare everything.

    ``_garden_candidates(id, staged, vouched)``: the candidate ids, whether the extract has them, and
    with a digest. ``_garden_staged``: the staged rows among them, copied out in the one pass over the
    staging table this needs, so the compare reads a few thousand rows, not the whole table again.
    """
    params = _narrowing(conn, schema, entity, batch_id, generated_at, now)
    if params is None:
        return None
    conn.execute(f"DROP TABLE IF EXISTS pg_temp.{STAGED}")  # made below by CREATE TABLE AS
    temp_table(conn, CANDIDATES, "(id text, staged boolean NOT NULL DEFAULT false, "
               "vouched boolean NOT NULL DEFAULT false)")
    stage, target = ident(sync_schema(schema), stage_table), entity_table(schema, entity)
    c = ident(CANDIDATES)
    # Touched in GatewayDB since the ledger's apply, or listed by the ledger; and, from the same scan of the
    # table, the live count the delete guard needs and whether any row is newer than the extract.
    found = Narrowed(*conn.execute(sql.SQL(
        "WITH g AS (SELECT count(*) FILTER (WHERE o.{d} IS NULL) AS live, COALESCE(bool_or(o.{ver} > %(v)s), false) "
        "AS newer, COALESCE(bool_or(o.{ver} >= %(v)s), false) AS reached, array_agg(o.id) FILTER (WHERE NOT {clean}) "
        "AS touched FROM {t} o), "
        "i AS (INSERT INTO {c} (id) SELECT unnest(touched) FROM g UNION SELECT unnest(%(listed)s::text[])) "
        "SELECT live, newer, reached FROM g").format(d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN),
                                            clean=_clean("o", True), t=target, c=c), params).fetchone())
    # Statistics of the join key only (and the row count, which ANALYZE always sets): the plans join on id,
    # and computing every column's statistics of the staged copy cost ~0.1 s per changed sync.
    conn.execute(sql.SQL("ANALYZE {} (id)").format(c))
    # Staged rows to compare: the landing staged them (not carried over: written by a transaction no older
    # than its first snapshot), or their id is a candidate, or their parent stopped being live since (the
    # compare must reject them again).
    why = [sql.SQL("s.xmin = {frozen} OR age(s.xmin) <= age(xid(%(land)s::text::xid8))").format(frozen=_FROZEN),
           sql.SQL("s.id IN (SELECT id FROM {c})").format(c=c)]
    for col, parent in entity.parents.items():
        why.append(sql.SQL("s.{col} IN (SELECT p.id FROM {p} p WHERE p.{d} IS NOT NULL AND NOT {clean})").format(
            col=ident(col), p=entity_table(schema, by_name(parent)), d=ident(DELETED_COLUMN), clean=_clean("p", False)))
    n = conn.execute(sql.SQL("CREATE TEMP TABLE {staged} ON COMMIT DROP AS SELECT s.* FROM {s} s WHERE {why}").format(
        staged=ident(STAGED), s=stage, why=sql.SQL(" OR ").join(why)), params).rowcount
    if n > rows // 2:
        for table in (CANDIDATES, STAGED):  # most rows changed: one full compare is cheaper
            conn.execute(f"DROP TABLE pg_temp.{table}")
        return None
    conn.execute(sql.SQL(
        "WITH u AS (UPDATE {c} c SET staged = true, vouched = s.{d} IS NOT NULL FROM {staged} s WHERE s.id = c.id "
        "RETURNING c.id) INSERT INTO {c} (id, staged, vouched) SELECT s.id, true, s.{d} IS NOT NULL FROM {staged} s "
        "WHERE s.id NOT IN (SELECT id FROM u)").format(c=c, d=ident(DIGEST), staged=ident(STAGED)))
    for table in (CANDIDATES, STAGED):
        conn.execute(sql.SQL("ANALYZE {} (id)").format(ident(table)))
    return found


def absent(conn: psycopg.Connection, schema: str, entity: Entity, stage_table: str, batch_id: str,
           generated_at: datetime, now: ApplySnapshot) -> tuple[int, int] | None:
    """(live rows a full apply would tombstone, live rows), narrowed as ``candidates`` narrows it, for the
    delete preview; None: the ledger cannot narrow it. Reads only; no temp tables.

    The pass over the entity table that finds the touched rows also takes the live candidates older than
    the extract (the ledger's listed ids by a hashed ``= ANY``); one scan of the staging table tells which of
    those few the extract has. Through the candidates table it was that, plus a lookup of every
    candidate by id: a changed sync's 10k dropped limits were 10k index probes (80 ms).
    """
    params = _narrowing(conn, schema, entity, batch_id, generated_at, now)
    if params is None:
        return None
    # Never prepared: a generic plan would not hash the ``= ANY`` array (see carry_over's range deletes).
    live, older = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE o.{d} IS NULL), array_agg(o.id) FILTER (WHERE o.{d} IS NULL AND o.{ver} < %(v)s "
        "AND (NOT {clean} OR o.id = ANY(%(listed)s::text[]))) FROM {t} o").format(
            d=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN), clean=_clean("o", True),
            t=entity_table(schema, entity)),
        params, prepare=False).fetchone()
    if not older:
        return 0, live
    # A scan of the staging table with a hashed ``= ANY``: as a join, the planner sorted all 440k staged rows
    # for a merge join (0.4 s), misled by a staging table not analysed yet.
    staged = {r[0] for r in conn.execute(sql.SQL("SELECT id FROM {s} WHERE id = ANY(%s::text[])").format(
        s=ident(sync_schema(schema), stage_table)), (older,), prepare=False)}
    return len(older) - len(staged), live


@contextlib.contextmanager
def index_probes(conn: psycopg.Connection, candidates: int, rows: int):
    """With few candidates, look each one up by primary key instead of hashing the whole table.

    The planner prices an index probe as a random read from disk; on these cached tables it is a few
    microseconds, so for 20k candidates it hashed all 450k rows of the table (160 ms) instead of probing
    (30 ms). Under about an eighth of the rows, probing wins. Not reset if the block raises: the
    transaction is then rolled back, and SET LOCAL with it.
    """
    few = candidates <= rows // 8
    if few:
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL enable_mergejoin = off")
    yield
    if few:
        conn.execute("SET LOCAL enable_hashjoin TO DEFAULT")
        conn.execute("SET LOCAL enable_mergejoin TO DEFAULT")


def count_candidates(conn: psycopg.Connection) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(CANDIDATES))).fetchone()[0]


def staged_rows() -> sql.Composable:
    """The staged rows a narrowed apply compares (made by ``candidates``)."""
    return ident(STAGED)


def maybe_absent(alias: str) -> sql.Composable:
    """Condition on GatewayDB row ``alias``: a candidate the extract does not have."""
    return sql.SQL("{a}.id IN (SELECT id FROM {c} WHERE NOT staged)").format(a=ident(alias), c=ident(CANDIDATES))


def unvouch(conn: psycopg.Connection, schema: str, stage_table: str, ids: sql.Composable, params: dict,
            narrowed: bool) -> None:
    """Clear the digests of staged rows GatewayDB does not hold as staged (orphans, stale rows): the next
    landing stages them anew instead of carrying them, so the next apply compares them again."""
    unset = sql.SQL("UPDATE {s} s SET {d} = NULL WHERE s.{d} IS NOT NULL AND s.id IN ({ids}) RETURNING s.id").format(
        s=ident(sync_schema(schema), stage_table), d=ident(DIGEST), ids=ids)
    if narrowed:
        unset = sql.SQL("WITH u AS ({unset}) UPDATE {c} SET vouched = false WHERE id IN (SELECT id FROM u)").format(
            unset=unset, c=ident(CANDIDATES))
    conn.execute(unset, params)


def record(conn: psycopg.Connection, schema: str, entity: Entity, stage_table: str, batch_id: str,
           generated_at: datetime, now: ApplySnapshot, narrowed: bool, rows: int, filled: bool = False,
           reached: bool = True) -> None:
    """Write this apply's ledger row: run last in the apply's transaction, after every write and ``unvouch``.

    ``unlisted``: live rows the staging table does not vouch for (no row, or no digest). After the
    tombstoning, a live row missing from the extract is one newer than it, or of its own version but
    written by someone else. When the apply compared only candidates, only they can be unlisted.
    ``filled``: the apply inserted every row of a table it found empty (under the entity lock), so no
    row is newer or someone else's, and only staged rows without a digest can be unlisted.
    ``reached`` (``Narrowed.reached``) false: no candidate the extract lacks is live after the tombstoning,
    so only staged ones are looked up (a changed sync's 10k dropped rows were 10k index probes, 60 ms). A
    row written since by someone else is no older than this apply's snapshot: touched, for the next apply.
    """
    stage, target = ident(sync_schema(schema), stage_table), entity_table(schema, entity)
    d, ver = ident(DELETED_COLUMN), ident(VERSION_COLUMN)
    params = {"v": generated_at, "me": str(now.xid), "max": MAX_LISTED + 1}
    if narrowed:
        listed = sql.SQL(
            "SELECT c.id FROM {c} c JOIN {t} t ON t.id = c.id AND t.{d} IS NULL WHERE {unsure}"
        ).format(c=ident(CANDIDATES), t=target, d=d, unsure=sql.SQL(
            "NOT (c.staged AND c.vouched)" if reached else "c.staged AND NOT c.vouched"))
        with index_probes(conn, count_candidates(conn), rows):
            ids = [r[0] for r in conn.execute(sql.SQL("SELECT id FROM ({}) u LIMIT %(max)s").format(listed), params)]
    else:
        # Both kinds are few (usually none): one plain scan of the table and
        # one of the staging table find them, then they are looked up by id. As one query, the planner hashed
        # the whole table to join it with the handful of staged rows without a digest (0.1 s per 450k rows).
        def few(query: str, **more) -> list[str]:
            return [r[0] for r in conn.execute(sql.SQL(query + " LIMIT %(max)s").format(
                t=target, s=stage, d=d, ver=ver, dg=ident(DIGEST)), {**params, **more})]

        newer = [] if filled else few("SELECT t.id FROM {t} t WHERE t.{d} IS NULL AND (t.{ver} > %(v)s OR "
                                      "(t.{ver} = %(v)s AND t.xmin <> xid(%(me)s::text::xid8)))")
        undigested = few("SELECT s.id FROM {s} s WHERE s.{dg} IS NULL")
        if len(newer) > MAX_LISTED or len(undigested) > MAX_LISTED:
            ids = None  # too many to list, whatever the lookups below would leave
        else:
            if newer:
                vouched = set(few("SELECT s.id FROM {s} s WHERE s.{dg} IS NOT NULL AND s.id = ANY(%(ids)s)",
                                  ids=newer))
                newer = [i for i in newer if i not in vouched]
            if undigested:
                undigested = few("SELECT t.id FROM {t} t WHERE t.id = ANY(%(ids)s) AND t.{d} IS NULL", ids=undigested)
            ids = sorted(set(newer) | set(undigested))
    conn.execute(
        sql.SQL("INSERT INTO {l} (batch_id, entity, generated_at, apply_xid, snap_xmin, hard_deletes, unlisted) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (batch_id, entity) DO UPDATE SET "
                "generated_at = EXCLUDED.generated_at, apply_xid = EXCLUDED.apply_xid, snap_xmin = EXCLUDED.snap_xmin, "
                "hard_deletes = EXCLUDED.hard_deletes, unlisted = EXCLUDED.unlisted, land_snap_xmin = NULL, gone = NULL"
                ).format(l=sync_table(schema, "apply_ledger")),
        (batch_id, entity.name, generated_at, now.xid, now.snap_xmin, now.hard_deletes,
         ids if ids is not None and len(ids) <= MAX_LISTED else None))


def carry_ledger(conn: psycopg.Connection, schema: str, entity: str, old_batch: str, new_batch: str) -> None:
    """A landing took ``old_batch``'s staging table over: its ledger now speaks for ``new_batch``.

    ``land_snap_xmin`` is read in the landing's transaction after it created its tables (so it holds an
    id): every row the landing stages from here on has an ``xmin`` no older than it.
    """
    conn.execute(
        sql.SQL("UPDATE {l} SET batch_id = %s, land_snap_xmin = pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                "gone = '{{}}' WHERE batch_id = %s AND entity = %s").format(l=sync_table(schema, "apply_ledger")),
        (new_batch, old_batch, entity))


def note_gone(cur: psycopg.Cursor, schema: str, entity: str, batch_id: str, ids: list[str] | None) -> None:
    """Add to the ledger's ``gone`` the ids a landing deleted from the taken-over table and did not stage
    again (those it did stage anew the next apply compares anyway). None, or past MAX_LISTED ids in all:
    the ledger says "unknown" (NULL). Once per landing: as one UPDATE per deleted range, the growing array
    was rewritten 69 times in a 1M-row changed sync (0.08 s)."""
    cur.execute(sql.SQL(
        "UPDATE {} SET gone = CASE WHEN gone IS NULL OR %(ids)s::text[] IS NULL OR cardinality(gone) + %(n)s > %(max)s "
        "THEN NULL ELSE gone || %(ids)s::text[] END WHERE batch_id = %(batch)s AND entity = %(entity)s").format(
            sync_table(schema, "apply_ledger")),
        {"n": len(ids or ()), "ids": ids if ids is not None and len(ids) <= MAX_LISTED else None,
         "max": MAX_LISTED, "batch": batch_id, "entity": entity})


def forget(conn: psycopg.Connection, schema: str, entity: str, batch_id: str) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s AND entity = %s").format(
        sync_table(schema, "apply_ledger")), (batch_id, entity))
