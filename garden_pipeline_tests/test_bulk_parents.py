"""Large pulls check parents as one set instead of PostgreSQL's per-row foreign-key triggers.

BULK_MIN_ROWS is lowered to 1 so the small test extract takes the bulk path. What must hold: a row whose
parent is missing or deleted is still rejected and never written; the foreign keys still hold for every
row; tables with triggers of their own keep them firing; a role that may not skip the triggers syncs
the ordinary way; and the setting never outlives the write.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from garden_pipeline.catalogue import CATALOGUE, by_name
from garden_pipeline.gatewaydb import apply
from garden_pipeline.gatewaydb.connection import libpq_url
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, metadata


@pytest.fixture(autouse=True)
def bulk_for_every_pull(monkeypatch):
    monkeypatch.setattr(apply, "BULK_MIN_ROWS", 1)


def _dangling(db, schema: str) -> int:
    """Rows of every child table whose parent row does not exist (what a foreign key forbids)."""
    total = 0
    for e in CATALOGUE:
        for col, parent in e.parents.items():
            total += db.execute(
                f'SELECT count(*) FROM "{schema}"."{e.table}" c WHERE NOT EXISTS '
                f'(SELECT 1 FROM "{schema}"."{by_name(parent).table}" p WHERE p.id = c."{col}")').fetchone()[0]
    return total


def test_bulk_sync_equals_the_extract_and_rejects_orphans(stack, sim, db, schema):
    sim.faults.add("invalid_rows", entity="subscription", count=3, error="dangling_parent")
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert metadata(result, "gatewaydb/subscriptions")["rejected"] == 3
    reasons = [r[0] for r in db.execute(
        f"SELECT reason FROM \"{schema}_sync\".rejected_records WHERE entity = 'subscription'").fetchall()]
    assert len(reasons) == 3 and all("not found in GatewayDB" in r for r in reasons)
    assert _dangling(db, schema) == 0
    for e in CATALOGUE:  # counted without RETURNING on this first (empty-table) write: still exact
        rows = db.execute(f'SELECT count(*) FROM "{schema}"."{e.table}"').fetchone()[0]
        assert metadata(result, f"gatewaydb/{e.plural}")["inserted"] == rows, e.name
    sim.faults.clear()
    assert stack.sync().success
    assert_db_equals_state(db, schema, sim.state.snapshot())


def test_bulk_path_is_used_and_the_setting_does_not_outlive_the_write(pg_url, stack, db, schema):
    assert stack.sync(entities=["project", "use_case"]).success
    with psycopg.connect(libpq_url(pg_url)) as conn:
        with conn.transaction():
            apply.lock_entity(conn, schema, "use_case")
            assert apply._check_parents_as_a_set(conn, schema, by_name("use_case")) is True
            assert conn.execute("SHOW session_replication_role").fetchone()[0] == "replica"
            src = ("(SELECT s.*, now() AS _version, 'upsert'::text AS _op FROM "
                   f'"{schema}".use_cases s WHERE false)')
            apply.write_rows(conn, schema, by_name("use_case"), psycopg.sql.SQL(src), {}, bump_version=False,
                             bulk=True)
            assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
            modes = {r[0] for r in conn.execute(
                "SELECT mode FROM pg_locks WHERE relation = %s::regclass AND pid = pg_backend_pid()",
                (f'"{schema}".projects',)).fetchall()}
            assert "ShareLock" in modes  # parents cannot change until the commit


def test_a_table_with_its_own_trigger_keeps_it_firing(stack, db, schema):
    assert stack.sync(entities=["project"]).success  # creates the schema and tables
    db.execute(f'CREATE TABLE "{schema}".audit (id text)')
    db.execute(f'CREATE FUNCTION "{schema}".audit_fn() RETURNS trigger LANGUAGE plpgsql AS '
               f'$$BEGIN INSERT INTO "{schema}".audit VALUES (NEW.id); RETURN NEW; END$$')
    db.execute(f'CREATE TRIGGER audit AFTER INSERT ON "{schema}".use_cases FOR EACH ROW '
               f'EXECUTE FUNCTION "{schema}".audit_fn()')
    result = stack.sync()
    assert result.success, failure_messages(result)
    inserted = metadata(result, "gatewaydb/use_cases")["inserted"]
    assert inserted > 0
    assert db.execute(f'SELECT count(*) FROM "{schema}".audit').fetchone()[0] == inserted


def test_a_role_that_may_not_skip_triggers_syncs_the_ordinary_way(pg_url, stack, sim, db, schema):
    role = f"garden_plain_{uuid.uuid4().hex[:8]}"
    assert stack.sync(entities=["project"]).success
    db.execute(f'CREATE ROLE "{role}" NOSUPERUSER')
    try:
        for s in (schema, f"{schema}_sync"):
            db.execute(f'GRANT ALL ON SCHEMA "{s}" TO "{role}"')
            db.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{s}" TO "{role}"')
        with psycopg.connect(libpq_url(pg_url)) as conn:
            conn.execute(f'SET ROLE "{role}"')
            with conn.transaction():
                assert apply._check_parents_as_a_set(conn, schema, by_name("use_case")) is False
                # the refused SET was rolled back to its savepoint: the transaction goes on
                assert conn.execute("SELECT 1").fetchone() == (1,)
                assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
    finally:
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')
