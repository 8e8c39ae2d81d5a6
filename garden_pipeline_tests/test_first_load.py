"""Filling an empty table builds its parent-id indexes after the rows (gatewaydb/first_load.py).

BULK_MIN_ROWS is lowered to 1 so the small test extract takes the bulk path. What must hold: the indexes,
the primary key and the children's foreign keys come back exactly as the migrations define them; a table
that is not empty, or that a reader holds, is written with its indexes in place (and the sync does not wait
on the reader); a child that a reader holds or that holds rows keeps the parent's primary key; a failed load
leaves the indexes, keys and the table as they were; the lock wait never outlives the load.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE, by_name
from garden_pipeline.gatewaydb import apply, first_load
from garden_pipeline.gatewaydb.connection import libpq_url
from garden_pipeline.gatewaydb.tables import parent_index_names
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, metadata

INDEXED = [e for e in CATALOGUE if e.parents]


@pytest.fixture(autouse=True)
def bulk_for_every_pull(monkeypatch):
    monkeypatch.setattr(apply, "BULK_MIN_ROWS", 1)


def _indexes(db, schema: str) -> dict[str, tuple[int, str]]:
    """index name -> (oid, definition with the schema name taken out), for every entity table."""
    rows = db.execute(
        "SELECT c.relname, c.oid, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid::regclass::text LIKE %s", (f"{schema}.%",)).fetchall()
    return {name: (oid, definition.replace(f"{schema}.", "")) for name, oid, definition in rows}


def _rebuilt(before: dict, after: dict) -> set[str]:
    assert {k: v[1] for k, v in before.items()} == {k: v[1] for k, v in after.items()}  # same definitions
    return {name for name in before if before[name][0] != after[name][0]}


def _constraints(db, schema: str) -> dict[str, str]:
    """constraint name -> table and definition (schema name taken out), for every entity table's constraints."""
    rows = db.execute("SELECT conname, conrelid::regclass::text || ': ' || pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE connamespace = %s::regnamespace AND contype IN ('p', 'f')", (schema,)).fetchall()
    return {name: definition.replace(f"{schema}.", "") for name, definition in rows}


def _keys(entities) -> set[str]:
    return {f"{e.table}_pkey" for e in entities}


def test_an_empty_table_gets_its_indexes_and_primary_key_built_after_the_rows(stack, sim, db, schema):
    assert stack.sync(entities=["project"]).success  # creates the tables; the children stay empty
    before, constraints = _indexes(db, schema), _constraints(db, schema)
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert_db_equals_state(db, schema, sim.state.snapshot())
    after = _indexes(db, schema)
    # Every table filled from empty, all its children empty then: the projects held rows already.
    assert _rebuilt(before, after) == ({n for e in INDEXED for n in parent_index_names(e)}
                                       | _keys(e for e in CATALOGUE if e.name != "project"))
    assert _constraints(db, schema) == constraints  # the children's foreign keys are back, as they were
    assert db.execute("SELECT bool_and(i.indisvalid AND i.indisready) FROM pg_index i "
                      "WHERE i.indrelid::regclass::text LIKE %s", (f"{schema}.%",)).fetchone()[0] is True
    assert db.execute("SELECT bool_and(convalidated) FROM pg_constraint WHERE connamespace = %s::regnamespace",
                      (schema,)).fetchone()[0] is True
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # and enforced
        db.execute(f'UPDATE "{schema}".llm_model_limits SET subscription_id = %s '
                   f'WHERE id = (SELECT min(id) FROM "{schema}".llm_model_limits)', ("sub-that-is-not-there",))
    # Tables that hold rows are written with their indexes in place.
    sim.state.mutate(20, rng_seed=3, kinds=("UPDATED",))
    assert stack.sync().success
    assert _rebuilt(after, _indexes(db, schema)) == set()
    assert_db_equals_state(db, schema, sim.state.snapshot())


def test_a_reader_holding_an_empty_child_leaves_the_primary_key_in_place(pg_url, stack, sim, db, schema):
    assert stack.sync(entities=["project", "use_case", "model"]).success
    before = _indexes(db, schema)
    with psycopg.connect(libpq_url(pg_url)) as reader:
        reader.execute(f'SELECT count(*) FROM "{schema}".llm_model_limits')  # the child, until its transaction ends
        result = stack.sync(entities=["subscription"])
        assert result.success, failure_messages(result)
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert metadata(result, "gatewaydb/subscriptions")["inserted"] > 0
    assert _rebuilt(before, _indexes(db, schema)) == set(parent_index_names(by_name("subscription")))


def test_a_child_holding_rows_keeps_the_parents_primary_key(stack, sim, db, schema):
    """A limit written by hand with the triggers off references a subscription GatewayDB does not have:
    adding the foreign key back would fail the load, so the key is not dropped at all."""
    assert stack.sync(entities=["project", "use_case", "model"]).success
    limit = next(iter(sim.state.snapshot()["llm_model_limit"].values()))
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")
        db.execute(f'INSERT INTO "{schema}".llm_model_limits SELECT * FROM jsonb_populate_record('
                   f'NULL::"{schema}".llm_model_limits, %s::jsonb || jsonb_build_object(\'source_ts\', now(), \'synced_at\', now()))',
                   (json.dumps(limit),))
    before, constraints = _indexes(db, schema), _constraints(db, schema)
    result = stack.sync(entities=["subscription"])
    assert result.success, failure_messages(result)
    assert metadata(result, "gatewaydb/subscriptions")["inserted"] > 0
    assert _rebuilt(before, _indexes(db, schema)) == set(parent_index_names(by_name("subscription")))
    assert _constraints(db, schema) == constraints
    assert db.execute(f'SELECT count(*) FROM "{schema}".llm_model_limits').fetchone()[0] == 1


def test_a_reader_holding_the_empty_table_gets_the_rows_with_the_indexes_kept(pg_url, stack, sim, db, schema):
    assert stack.sync(entities=["project", "use_case", "model"]).success
    before = _indexes(db, schema)
    with psycopg.connect(libpq_url(pg_url)) as reader:
        reader.execute(f'SELECT count(*) FROM "{schema}".subscriptions')  # ACCESS SHARE until its transaction ends
        result = stack.sync(entities=["subscription"])
        assert result.success, failure_messages(result)  # done while the reader still holds the table
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert metadata(result, "gatewaydb/subscriptions")["inserted"] > 0
    assert _rebuilt(before, _indexes(db, schema)) == set()


def test_a_failed_first_load_leaves_the_indexes_and_the_table_as_they_were(stack, sim, db, schema):
    assert stack.sync(entities=["project", "use_case", "model"]).success
    db.execute(f"ALTER TABLE \"{schema}\".subscriptions ADD CONSTRAINT no_suspended CHECK (status <> 'suspended')")
    before, constraints = _indexes(db, schema), _constraints(db, schema)
    result = stack.sync(entities=["subscription"])
    assert not result.success
    assert "no_suspended" in failure_messages(result)
    assert db.execute(f'SELECT count(*) FROM "{schema}".subscriptions').fetchone()[0] == 0
    assert _rebuilt(before, _indexes(db, schema)) == set()  # rolled back with the rows: the same indexes
    assert _constraints(db, schema) == constraints


def test_the_lock_wait_does_not_outlive_the_load(pg_url, stack, db, schema):
    assert stack.sync(entities=["project", "use_case"]).success
    entity = by_name("use_case_budget")
    with psycopg.connect(libpq_url(pg_url)) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '7s'")
            apply.lock_entity(conn, schema, entity.name)
            src = sql.SQL(f"(SELECT s.*, now() AS _version, 'upsert'::text AS _op FROM \"{schema}\".use_case_budgets s "
                          "WHERE false)")
            apply.write_rows(conn, schema, entity, src, {}, bump_version=False, bulk=True)
            assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
            held = {r[0] for r in conn.execute(
                "SELECT mode FROM pg_locks WHERE relation = %s::regclass AND pid = pg_backend_pid()",
                (f'"{schema}".use_case_budgets',)).fetchall()}
            assert "AccessExclusiveLock" in held  # the indexes were dropped and built again in here
            assert conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexname = ANY(%s)",
                                (schema, parent_index_names(entity))).fetchone()[0] == len(entity.parents)


@pytest.mark.parametrize("server_target, expected_bounds", [(100, first_load.FIRST_STATISTICS_TARGET + 1), (10, 11)])
def test_a_filled_table_is_analysed_at_the_lower_target_and_the_setting_is_put_back(
        pg_url, schema, server_target, expected_bounds):
    with psycopg.connect(libpq_url(pg_url)) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        table = sql.Identifier(schema, "filled")
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT g AS id FROM generate_series(1, 5000) g").format(table))
        conn.execute(f"SET default_statistics_target = {server_target}")
        first_load.analyse(conn, table)
        assert conn.execute("SELECT current_setting('default_statistics_target')").fetchone()[0] == str(server_target)
        reltuples, bounds = conn.execute(
            "SELECT c.reltuples, cardinality(s.histogram_bounds::text::int[]) FROM pg_class c "
            "JOIN pg_stats s ON s.schemaname = %s AND s.tablename = c.relname AND s.attname = 'id' "
            "WHERE c.oid = %s::regclass", (schema, table.as_string(conn))).fetchone()
        assert reltuples == 5000
        assert bounds == expected_bounds
