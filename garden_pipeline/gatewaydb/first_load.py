"""Filling an empty entity table: its indexes are built once after the rows, not row by row.

Inserting 450k subscriptions into the table with its two parent-id B-trees took 1.96 s; the same insert
with the primary key only took 0.73 s, and building the two indexes afterwards 0.40 s (PostgreSQL 15,
2 cores): one sorted build is cheaper than 450k descents to random leaves of each tree. The primary key
costs as much again even though ids arrive in order (its inserts stay at the right edge, but each is a
locked page, two text comparisons and a WAL record): the same 450k rows went in in 0.39-0.51 s without it
against 0.91-1.26 s with it, and building it after took 0.14-0.21 s, the rows being sorted already.

The primary key is rebuilt too, where that is safe: the children's foreign keys reference it, so they are
dropped with it and added back after, which checks every child row against the new key. That is only done
when every referencing table is another entity table of this schema and is empty (a child's rows could only
reference an empty parent if someone wrote them with the triggers off, and re-adding its key would then
fail the load); otherwise the key stays and takes its inserts.

Dropping an index or a constraint takes an ACCESS EXCLUSIVE lock on its table (and on each child whose
foreign key goes) until the commit. The tables are empty, so a reader that waits for the load (about a
second at 450k rows) then sees every row instead of none. Each lock is only tried for ``LOCK_WAIT``: if a
reader or writer holds the table longer, the rows go in with the indexes in place, as before; if it holds
a child, with the primary key in place. Only the indexes and keys this project's migrations create are
dropped, and only while they are plain (valid, not clustered, default tablespace, no comment, the key's
index named as the key); each is rebuilt from PostgreSQL's own definition of it. A failure rolls the drops
back with the inserts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE, Entity
from garden_pipeline.gatewaydb.sql import entity_table, ident
from garden_pipeline.gatewaydb.tables import parent_index_names

LOCK_WAIT = "250ms"
# Statistics target of the ANALYZE after a first load (PostgreSQL's default is 100). See ``analyse``.
FIRST_STATISTICS_TARGET = 30


def _plain_indexes(conn, schema: str, entity: Entity) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of our parent-id indexes that can be dropped and rebuilt as they were."""
    return conn.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND c.relname = ANY(%s) AND NOT i.indisunique AND NOT i.indisclustered "
        "AND i.indisvalid AND i.indisready AND c.reltablespace = 0 AND obj_description(c.oid, 'pg_class') IS NULL "
        "ORDER BY c.relname",
        (f'"{schema}"."{entity.table}"', parent_index_names(entity)),
    ).fetchall()


def _primary_key(conn, schema: str, entity: Entity) -> tuple[str, str, list[tuple[str, str, str]]] | None:
    """(name, definition, [(child table, name, definition) of each foreign key referencing it]) of the
    table's primary key, if it and those keys can be dropped and rebuilt as they were; None otherwise."""
    table = f'"{schema}"."{entity.table}"'
    key = conn.execute(
        "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_class i ON i.oid = c.conindid "
        "JOIN pg_index x ON x.indexrelid = i.oid WHERE c.conrelid = %s::regclass AND c.contype = 'p' "
        "AND i.relname = c.conname AND NOT x.indisclustered AND x.indisvalid AND x.indisready AND i.reltablespace = 0 "
        "AND obj_description(i.oid, 'pg_class') IS NULL AND obj_description(c.oid, 'pg_constraint') IS NULL",
        (table,),
    ).fetchone()
    if key is None:
        return None
    children = conn.execute(
        "SELECT n.nspname, r.relname, f.conname, pg_get_constraintdef(f.oid), "
        "obj_description(f.oid, 'pg_constraint') IS NULL AND f.conrelid <> f.confrelid "
        "FROM pg_constraint f JOIN pg_class r ON r.oid = f.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE f.contype = 'f' AND f.confrelid = %s::regclass ORDER BY r.relname, f.conname",
        (table,),
    ).fetchall()
    ours = {e.table for e in CATALOGUE}
    if not all(nsp == schema and child in ours and plain for nsp, child, _, _, plain in children):
        return None
    return key[0], key[1], [(child, name, definition) for _, child, name, definition, _ in children]


def _lock_soon(conn, tables: list[sql.Composable]) -> bool:
    """ACCESS EXCLUSIVE on ``tables`` if it can be had within LOCK_WAIT; False (and nothing held) otherwise."""
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    try:
        with conn.transaction():  # a savepoint: a lock that times out must not abort the sync's transaction
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_WAIT,))
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(tables)))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
        return False
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
    return True


def _empty(conn, tables: list[sql.Composable]) -> bool:
    return conn.execute(sql.SQL("SELECT NOT ({})").format(sql.SQL(" OR ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {})").format(t) for t in tables))).fetchone()[0]


@contextmanager
def indexes_built_after(conn: psycopg.Connection, schema: str, entity: Entity) -> Iterator[bool]:
    """Around the insert into an empty table: drop its plain indexes (and primary key), rebuild them after.

    Yields whether anything was dropped. Must run inside the apply's transaction; on an exception
    nothing is rebuilt here, the transaction's rollback restores the indexes and keys.
    """
    indexes = _plain_indexes(conn, schema, entity)
    key = _primary_key(conn, schema, entity)
    table = entity_table(schema, entity)
    if (not indexes and key is None) or not _lock_soon(conn, [table]):
        yield False
        return
    foreign_keys = []
    if key is not None:
        foreign_keys = key[2]
        children = [ident(schema, child) for child in sorted({child for child, _, _ in foreign_keys})]
        # Empty before the lock (no lock is taken on a child that holds rows), and still empty under it.
        if children and not (_empty(conn, children) and _lock_soon(conn, children) and _empty(conn, children)):
            key, foreign_keys = None, []
    for child, name, _ in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(ident(schema, child), ident(name)))
    if key is not None:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, ident(key[0])))
    for name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(ident(schema, name)))
    yield bool(indexes) or key is not None
    if key is not None:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, ident(key[0]), sql.SQL(key[1])))
    for _, definition in indexes:
        conn.execute(definition)
    for child, name, definition in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            ident(schema, child), ident(name), sql.SQL(definition)))


def analyse(conn: psycopg.Connection, table: sql.Composable) -> None:
    """Planner statistics for a table a load just filled, sampled at ``FIRST_STATISTICS_TARGET``.

    Its statistics still describe an empty table, and autovacuum may take a minute to notice (or
    never come, where it is off): the next sync's joins would be planned for a handful of rows (a
    hash of the whole table where an index probe of a few thousand would do). Those plans need the
    row count and the shape of the id and parent-id columns, not 100-bucket histograms of every text
    column: at the default target, sampling 30k rows and sorting each column's values took 0.11-0.13 s
    per 450k-row table (0.13 s for the 40k use cases, whose descriptions are long); at 30, 9k rows,
    a third of that. A server's own lower default wins; a column's own target (``SET STATISTICS``)
    is kept, as ANALYZE always does.
    """
    previous = conn.execute("SELECT current_setting('default_statistics_target')::int").fetchone()[0]
    conn.execute("SELECT set_config('default_statistics_target', %s, true)",
                 (str(min(previous, FIRST_STATISTICS_TARGET)),))
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    conn.execute("SELECT set_config('default_statistics_target', %s, true)", (str(previous),))
