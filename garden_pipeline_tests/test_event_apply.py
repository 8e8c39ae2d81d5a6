"""Applying inbox events: ordering, duplicates, tombstones, parking, dead letters, replay."""

from __future__ import annotations

from datetime import timedelta

import pytest

from garden_pipeline.defs.events.jobs import apply_events_job, replay_dead_letters_job
from garden_pipeline.events import inbox
from garden_pipeline.events.envelope import validate_event
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.resources import PostgresGatewayDB, RedisCompletionStream, EmbeddedCompletionStream
from garden_pipeline_tests.events_harness import apply, event, inbox_rows, project, use_case
from garden_pipeline_tests.harness import live_rows

T = ["2025-07-15T14:0%d:00Z" % i for i in range(10)]


@pytest.fixture
def push(pg_url, schema):
    migrate.upgrade(pg_url, schema)

    def _push(*events):
        with connect(pg_url, autocommit=True) as conn:
            return inbox.store(conn, schema, [validate_event(e) for e in events])

    return _push


def _states(db, schema) -> dict[str, str]:
    return {f"{r[2]}:{r[3]}:{r[4]}:{r[0]}": r[5] for r in inbox_rows(db, schema)}


def _state_list(db, schema) -> list[str]:
    return [r[5] for r in inbox_rows(db, schema)]


def test_create_update_delete_in_one_batch_ends_deleted(push, pg_url, schema, db):
    push(event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])),
         event("UPDATED", "project", "p1", T[2], project("p1", "B", T[2])),
         event("DELETED", "project", "p1", T[3]))
    result = apply(pg_url, schema)
    assert result.events == 3
    assert _state_list(db, schema) == ["stale", "stale", "applied"]
    assert live_rows(db, schema, "project") == {}
    # Never seen alive: the delete leaves a tombstone record, so the late CREATE cannot bring it back.
    assert db.execute(f'SELECT count(*) FROM "{schema}_sync".tombstones').fetchone()[0] == 1


def test_older_event_never_overwrites_newer_state(push, pg_url, schema, db):
    push(event("UPDATED", "project", "p1", T[5], project("p1", "New", T[5])))
    apply(pg_url, schema)
    push(event("UPDATED", "project", "p1", T[3], project("p1", "Old", T[3])))
    result = apply(pg_url, schema)
    assert result.states["stale"] == 1
    assert live_rows(db, schema, "project")["p1"]["project_name"] == "New"


def test_deleted_entity_is_not_revived_by_an_older_event_but_a_newer_create_recreates_it(push, pg_url, schema, db):
    push(event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])))
    apply(pg_url, schema)
    push(event("DELETED", "project", "p1", T[4]))
    apply(pg_url, schema)
    push(event("UPDATED", "project", "p1", T[3], project("p1", "Late", T[3])))
    assert apply(pg_url, schema).states["stale"] == 1
    assert live_rows(db, schema, "project") == {}
    push(event("CREATED", "project", "p1", T[6], project("p1", "Again", T[6])))
    assert apply(pg_url, schema).states["applied"] == 1
    assert live_rows(db, schema, "project")["p1"]["project_name"] == "Again"


def test_same_change_twice_under_different_event_ids_is_a_duplicate(push, pg_url, schema, db):
    e = event("CREATED", "project", "p1", T[1], project("p1", "A", T[1]))
    push({**e, "event_id": "a"}, {**e, "event_id": "b"})
    apply(pg_url, schema)
    push({**e, "event_id": "c"})
    apply(pg_url, schema)
    assert sorted(_state_list(db, schema)) == ["applied", "duplicate", "duplicate"]


def test_child_before_parent_is_parked_then_applied_when_the_parent_arrives(push, pg_url, schema, db):
    push(event("CREATED", "use_case", "u1", T[2], use_case("u1", "p1", T[2])))
    first = apply(pg_url, schema)
    assert first.states["parked"] == 1
    row = inbox_rows(db, schema)[0]
    assert row[5] == "parked" and "project_id=p1 not found" in row[6]
    push(event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])))
    second = apply(pg_url, schema)
    assert second.states["applied"] == 2
    assert set(live_rows(db, schema, "use_case")) == {"u1"}


def test_parent_and_child_in_one_batch_apply_in_foreign_key_order(push, pg_url, schema, db):
    push(event("CREATED", "use_case", "u1", T[2], use_case("u1", "p1", T[2])),
         event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])))
    assert apply(pg_url, schema).states["applied"] == 2


def test_parked_too_long_is_dead_lettered_then_replayed(push, pg_url, schema, db, redis_url_or_file, stream_name):
    push(event("CREATED", "use_case", "u1", T[2], use_case("u1", "p1", T[2])))
    apply(pg_url, schema)
    db.execute(f"UPDATE \"{schema}_sync\".inbox SET parked_since = now() - interval '2 hours'")
    result = apply(pg_url, schema, park_timeout=timedelta(hours=1))
    assert result.states["dead_lettered"] == 1
    assert "parked longer than" in inbox_rows(db, schema)[0][6]
    push(event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])))
    apply(pg_url, schema)
    assert _state_list(db, schema) == ["dead_lettered", "applied"]
    url, file = redis_url_or_file
    stream = RedisCompletionStream(redis_url=url, stream=stream_name) if url else EmbeddedCompletionStream(
        db_file=file, stream=stream_name)
    replay = replay_dead_letters_job.execute_in_process(
        run_config={"ops": {"replay_dead_letters": {"config": {"all_dead_letters": True}}}},
        resources={"gateway_db": PostgresGatewayDB(db_url=pg_url, db_schema=schema), "completion_stream": stream},
    )
    assert replay.success
    assert _state_list(db, schema) == ["applied", "applied"]
    assert set(live_rows(db, schema, "use_case")) == {"u1"}


def test_poison_event_is_dead_lettered_and_the_rest_of_the_batch_applies(push, pg_url, schema, db):
    push(event("CREATED", "project", "p1", T[1], project("p1", "A", T[1])),
         event("CREATED", "project", "p2", T[1], project("p2", "B", T[1])))
    # An event that passed validation when it arrived but cannot be applied now (here: edited in place).
    db.execute(f"""UPDATE "{schema}_sync".inbox SET payload = payload || '{{"updated_time": "not a time"}}'
                   WHERE entity_id = 'p2'""")
    result = apply(pg_url, schema)
    assert result.states == {"applied": 1, "dead_lettered": 1}
    assert set(live_rows(db, schema, "project")) == {"p1"}
    reason = [r[6] for r in inbox_rows(db, schema) if r[3] == "p2"][0]
    assert reason.startswith("failed to apply")


def test_apply_events_job_with_no_config_drains_everything_and_announces(push, pg_url, schema, db, redis_client,
                                                                          redis_url_or_file, stream_name):
    push(*(event("CREATED", "project", f"p{i}", T[1], project(f"p{i}", "A", T[1])) for i in range(5)))
    url, file = redis_url_or_file
    stream = RedisCompletionStream(redis_url=url, stream=stream_name) if url else EmbeddedCompletionStream(
        db_file=file, stream=stream_name)
    result = apply_events_job.execute_in_process(
        resources={"gateway_db": PostgresGatewayDB(db_url=pg_url, db_schema=schema), "completion_stream": stream})
    assert result.success
    assert _state_list(db, schema) == ["applied"] * 5
    out = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"][0]
    md = {k: getattr(v, "value", v) for k, v in out.event_specific_data.metadata.items()}
    assert md["events"] == 5 and md["applied"] == 5 and md["parked"] == 0
    entries = redis_client.xrange(stream_name)
    assert len(entries) == 1 and entries[0][1]["mode"] == "events"
    assert '"project": {"deleted": 0, "inserted": 5' in entries[0][1]["counts"]
    mats = [e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert mats == ["gatewaydb/projects"]
