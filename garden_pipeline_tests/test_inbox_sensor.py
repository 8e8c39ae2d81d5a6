"""The inbox sensor, cursor in and cursor out."""

from __future__ import annotations

import pytest
from dagster import SkipReason, build_sensor_context

from garden_pipeline.defs.events.sensor import build_inbox_sensor
from garden_pipeline.events import inbox
from garden_pipeline.events.envelope import validate_event
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.resources import PostgresGatewayDB
from garden_pipeline_tests.events_harness import apply, event


@pytest.fixture
def push(pg_url, schema):
    migrate.upgrade(pg_url, schema)

    def _push(n: int, start: int = 0) -> None:
        with connect(pg_url, autocommit=True) as conn:
            inbox.store(conn, schema, [validate_event(event("DELETED", "project", f"p{i}", "2025-01-01T00:00:00Z"))
                                       for i in range(start, start + n)])

    return _push


def _tick(sensor, cursor, pg_url, schema):
    ctx = build_sensor_context(cursor=cursor, resources={"gateway_db": PostgresGatewayDB(db_url=pg_url,
                                                                                          db_schema=schema)})
    return sensor(ctx), ctx


def test_one_run_per_batch_with_a_stable_run_key_and_the_cursor_past_what_was_requested(push, pg_url, schema, db):
    sensor = build_inbox_sensor(batch_size=3)
    result, _ = _tick(sensor, None, pg_url, schema)
    assert isinstance(result, SkipReason)

    push(7)
    ids = [r[0] for r in db.execute(f'SELECT id FROM "{schema}_sync".inbox ORDER BY id').fetchall()]
    result, _ = _tick(sensor, None, pg_url, schema)
    keys = [r.run_key for r in result.run_requests]
    assert keys == [f"inbox:{ids[0]}-{ids[2]}", f"inbox:{ids[3]}-{ids[5]}", f"inbox:{ids[6]}-{ids[6]}"]
    assert [r.run_config["ops"]["apply_events"]["config"]["max_id"] for r in result.run_requests] == \
        [ids[2], ids[5], ids[6]]
    assert result.cursor == str(ids[6])

    # Same cursor in, same requests out: the run keys make a repeated tick harmless.
    again, _ = _tick(sensor, None, pg_url, schema)
    assert [r.run_key for r in again.run_requests] == keys

    # Cursor at the end: nothing new.
    assert isinstance(_tick(sensor, result.cursor, pg_url, schema)[0], SkipReason)

    push(2, start=100)
    later, _ = _tick(sensor, result.cursor, pg_url, schema)
    new_ids = [r[0] for r in db.execute(f'SELECT id FROM "{schema}_sync".inbox ORDER BY id').fetchall()][7:]
    assert [r.run_key for r in later.run_requests] == [f"inbox:{new_ids[0]}-{new_ids[1]}"]
    assert later.cursor == str(new_ids[1])


def test_cursor_never_moves_past_rows_it_did_not_request(push, pg_url, schema, db):
    sensor = build_inbox_sensor(batch_size=2)
    push(2)
    result, _ = _tick(sensor, None, pg_url, schema)
    last = int(result.cursor)
    assert last == max(r[0] for r in db.execute(f'SELECT id FROM "{schema}_sync".inbox').fetchall())
    # Rows applied by someone else are not pending: not requested, and the cursor stays.
    push(1, start=50)
    apply(pg_url, schema)
    assert isinstance(_tick(sensor, str(last), pg_url, schema)[0], SkipReason)


def test_parked_events_get_a_retry_run_without_new_events(push, pg_url, schema, db):
    with connect(pg_url, autocommit=True) as conn:
        inbox.store(conn, schema, [validate_event(event(
            "CREATED", "use_case", "u1", "2025-01-01T00:00:00Z",
            {"id": "u1", "project_id": "missing", "use_case_name": "n", "use_case_code": "c", "status": "active",
             "created_time": "2025-01-01T00:00:00Z", "updated_time": "2025-01-01T00:00:00Z"}))])
    apply(pg_url, schema)
    sensor = build_inbox_sensor()
    cursor = str(db.execute(f'SELECT max(id) FROM "{schema}_sync".inbox').fetchone()[0])
    result, _ = _tick(sensor, cursor, pg_url, schema)
    assert len(result.run_requests) == 1 and result.run_requests[0].run_key.startswith("inbox:parked:")
    assert result.cursor == cursor
