"""PostgreSQL faults and races: GatewayDB ends in the old state or the new one, and a retry finishes."""

from __future__ import annotations

import threading
import time

import psycopg

from garden_pipeline.catalogue import ENTITIES
from garden_pipeline.gatewaydb.apply import read_watermarks
from garden_pipeline.gatewaydb.connection import connect, libpq_url
from garden_pipeline.resources import PostgresGatewayDB
from garden_pipeline_tests.events_harness import apply, push_via_receiver
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, versions


class TableLock:
    """Another session holding a lock on a GatewayDB table, so the pipeline blocks mid-write on demand."""

    def __init__(self, pg_url: str, schema: str, table: str, mode: str = "SHARE"):
        self.conn = psycopg.connect(libpq_url(pg_url))
        self.conn.execute(f'LOCK TABLE "{schema}"."{table}" IN {mode} MODE')

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def _blocked_backend(pg_url: str, table: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    with connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'garden_pipeline' "
                "AND wait_event_type = 'Lock' AND query LIKE %s", (f'%"{table}"%',)).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"the pipeline never blocked on {table}")


def _snapshot_versions(db, schema):
    return {e: versions(db, schema, e) for e in ENTITIES}


def test_connection_killed_mid_write_leaves_the_old_state_and_a_retry_finishes(stack, sim, db, schema, pg_url):
    assert stack.sync().success
    before = _snapshot_versions(db, schema)
    marks = read_watermarks(db, schema)
    sim.state.mutate(25, rng_seed=8, kinds=("UPDATED", "CREATED"))
    lock = TableLock(pg_url, schema, "subscriptions")
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", stack.sync()))
    runner.start()
    try:
        pid = _blocked_backend(pg_url, "subscriptions")
        with connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        lock.release()
    runner.join(timeout=120)
    result = outcome["result"]
    assert not result.success
    assert "terminat" in failure_messages(result).lower() or "connection" in failure_messages(result).lower()
    after = _snapshot_versions(db, schema)
    assert after["subscription"] == before["subscription"], "the killed transaction left nothing behind"
    assert read_watermarks(db, schema)["subscription"] == marks["subscription"]
    retry = stack.sync()
    assert retry.success, failure_messages(retry)
    assert_db_equals_state(db, schema, sim.state.snapshot())


def test_statement_timeout_fails_the_step_cleanly_and_a_retry_finishes(stack, sim, db, schema, pg_url):
    assert stack.sync().success
    sim.state.mutate(10, rng_seed=9, kinds=("UPDATED",))
    before = versions(db, schema, "model")
    lock = TableLock(pg_url, schema, "models")
    try:
        resources = stack.resources()
        resources["gateway_db"] = PostgresGatewayDB(db_url=pg_url, db_schema=schema, statement_timeout_ms=500)
        result = stack.sync(resources=resources)
    finally:
        lock.release()
    assert not result.success
    assert "statement timeout" in failure_messages(result)
    assert versions(db, schema, "model") == before
    assert stack.sync().success
    assert_db_equals_state(db, schema, sim.state.snapshot())


def test_lock_timeout_gives_up_with_a_clear_message(stack, db, schema, pg_url):
    assert stack.sync().success
    lock = TableLock(pg_url, schema, "projects", mode="ACCESS EXCLUSIVE")
    try:
        resources = stack.resources()
        resources["gateway_db"] = PostgresGatewayDB(db_url=pg_url, db_schema=schema, lock_timeout_ms=300)
        result = stack.sync(resources=resources, entities=["project"])
    finally:
        lock.release()
    assert not result.success
    assert "lock timeout" in failure_messages(result)


def test_two_full_syncs_at_once_serialise_without_deadlock(stack, sim, db, schema):
    assert stack.sync().success
    sim.state.mutate(30, rng_seed=10)
    results = []
    threads = [threading.Thread(target=lambda: results.append(stack.sync(gateway_config={"allow_large_delete": True})))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert len(results) == 2 and all(r.success for r in results), [failure_messages(r) for r in results]
    assert_db_equals_state(db, schema, sim.state.snapshot())


def test_full_sync_racing_event_batches_and_a_single_entity_rematerialisation(stack, sim, db, schema, pg_url):
    assert stack.sync().success
    stop = threading.Event()
    errors: list[BaseException] = []

    def events_loop():
        try:
            for seed in range(5):
                push_via_receiver(pg_url, schema, sim.state.mutate(10, rng_seed=100 + seed))
                apply(pg_url, schema)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    loop = threading.Thread(target=events_loop)
    loop.start()
    outcomes = []
    while not stop.is_set():
        outcomes.append(stack.sync(gateway_config={"allow_large_delete": True}))
        outcomes.append(stack.sync(entities=["model"], gateway_config={"allow_large_delete": True}))
    loop.join(timeout=180)
    assert not errors, errors
    assert all(o.success for o in outcomes), [failure_messages(o) for o in outcomes if not o.success]
    apply(pg_url, schema)  # drain anything parked while parents were in flight
    assert_db_equals_state(db, schema, sim.state.snapshot())
