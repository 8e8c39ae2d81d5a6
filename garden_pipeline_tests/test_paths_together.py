"""The pull path and the event path write through one apply function and never undo each other."""

from __future__ import annotations

import httpx

from garden_pipeline.defs.events.jobs import apply_events_job
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.apply import apply_landed
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.gatewaydb.staging import find_landed, land_extract
from garden_pipeline.simulator.server import SYNC_PATH
from garden_pipeline_tests.events_harness import apply, push_via_receiver
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, live_rows, metadata

SECRET = "shh"


def test_events_over_http_then_full_sync_agree_and_the_resync_writes_nothing(stack, sim, pg_url, schema, db):
    assert stack.sync().success
    responses = push_via_receiver(pg_url, schema, sim.state.mutate(30, rng_seed=5), SECRET)
    assert all(r.status_code == 200 for r in responses)
    resources = stack.resources()
    result = apply_events_job.execute_in_process(
        resources={k: resources[k] for k in ("gateway_db", "completion_stream")})
    assert result.success
    assert_db_equals_state(db, schema, sim.state.snapshot())
    resync = stack.sync()
    assert resync.success, failure_messages(resync)
    for e in ("projects", "use_cases", "subscriptions", "llm_model_limits"):
        md = metadata(resync, f"gatewaydb/{e}")
        assert (md["inserted"], md["updated"], md["deleted"]) == (0, 0, 0), e


def _land(sim, pg_url, schema, entity):
    migrate.upgrade(pg_url, schema)
    with httpx.stream("GET", sim.url + SYNC_PATH) as response, connect(pg_url, autocommit=True) as conn:
        land_extract(conn, schema, "race", response.iter_bytes(), [entity], mode="full")
        return find_landed(conn, schema, entity, "race")


def test_a_snapshot_taken_before_a_delete_event_cannot_revive_the_row(stack, sim, pg_url, schema, db):
    assert stack.sync().success
    project = sorted(sim.state.snapshot()["project"])[0]
    old_snapshot = _land(sim, pg_url, schema, "project")  # Model Garden's state before the delete
    push_via_receiver(pg_url, schema, sim.state.delete("project", project))
    apply(pg_url, schema)
    assert project not in live_rows(db, schema, "project")
    with connect(pg_url, autocommit=True) as conn:
        counts = apply_landed(conn, schema, old_snapshot, "race")
    assert project not in live_rows(db, schema, "project")
    assert counts.stale == 1 and counts.inserted == counts.updated == 0


def test_a_delete_for_an_entity_never_seen_blocks_an_older_snapshot(stack, sim, pg_url, schema, db):
    model = sorted(sim.state.snapshot()["model"])[0]
    old_snapshot = _land(sim, pg_url, schema, "model")
    push_via_receiver(pg_url, schema, [e for e in sim.state.delete("model", model) if e["entity_type"] == "model"])
    apply(pg_url, schema)
    with connect(pg_url, autocommit=True) as conn:
        apply_landed(conn, schema, old_snapshot, "race")
    assert model not in live_rows(db, schema, "model")
    assert len(live_rows(db, schema, "model")) == sim.state.count("model")
