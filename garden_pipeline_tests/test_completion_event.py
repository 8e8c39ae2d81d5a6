"""The sync.completed entry on Redis: one per committed run, none otherwise, delivered after outages."""

from __future__ import annotations

import json

import pytest

from garden_pipeline.catalogue import ENTITIES
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.gatewaydb.outbox import pending
from garden_pipeline.publish.relay import publish_once, relay_pending
from garden_pipeline.resources import RedisCompletionStream
from garden_pipeline_tests.harness import failure_messages, metadata

FIELDS = {"type", "event_id", "run_id", "mode", "counts", "watermark", "completed_at"}


@pytest.fixture
def sim_params() -> dict:
    return {"scale": 120, "seed": 3}


def test_one_entry_per_successful_run_with_the_contract_fields(stack, sim, redis_client, stream_name):
    first = stack.sync()
    second = stack.sync(mode="incremental")
    assert first.success and second.success
    entries = redis_client.xrange(stream_name)
    assert len(entries) == 2
    (_, a), (_, b) = entries
    assert set(a) == FIELDS and set(b) == FIELDS
    assert a["type"] == "sync.completed" and a["mode"] == "full" and b["mode"] == "incremental"
    assert a["run_id"] == first.run_id and b["run_id"] == second.run_id
    assert a["event_id"] != b["event_id"]
    counts = json.loads(a["counts"])
    assert set(counts) == set(ENTITIES)
    assert counts["project"] == {"inserted": sim.state.count("project"), "updated": 0, "deleted": 0, "unchanged": 0}
    assert a["watermark"].endswith("Z") and a["completed_at"].endswith("Z")
    assert a["watermark"].replace("Z", "+00:00") == metadata(first, "extract/projects")["generated_at"]


def test_no_entry_for_a_failed_run(stack, sim, redis_client, stream_name):
    assert stack.sync().success
    sim.state.mutate(5, rng_seed=1)
    sim.faults.add("drop_fraction", entity="use_case", fraction=0.6)
    failed = stack.sync()
    assert not failed.success
    assert len(redis_client.xrange(stream_name)) == 1
    sim.faults.clear()
    sim.faults.add("invalid_json")
    assert not stack.sync().success
    assert len(redis_client.xrange(stream_name)) == 1


def test_redis_down_then_back_delivers_exactly_once(stack, pg_url, schema, redis_client, stream_name):
    # Nothing listens on port 1: a real connection failure, not a stand-in.
    resources = stack.resources()
    resources["completion_stream"] = RedisCompletionStream(redis_url="redis://127.0.0.1:1/0", stream=stream_name)
    result = stack.sync(resources=resources)
    assert result.success, failure_messages(result)
    md = metadata(result, "redis/sync_completed")
    assert md["published"] is False
    assert not redis_client.exists(stream_name)
    with connect(pg_url, autocommit=True) as conn:
        assert [e.event_id for e in pending(conn, schema)] == [md["event_id"]]
        delivered = relay_pending(conn, schema, redis_client, stream_name, ttl=3600)
        assert delivered.published == [md["event_id"]]
        again = relay_pending(conn, schema, redis_client, stream_name, ttl=3600)
        assert again.published == [] and pending(conn, schema) == []
    entries = redis_client.xrange(stream_name)
    assert [f["event_id"] for _, f in entries] == [md["event_id"]]
    assert entries[0][1]["run_id"] == result.run_id


def test_a_resend_after_a_crash_between_xadd_and_bookkeeping_is_suppressed(stack, pg_url, schema, redis_client,
                                                                          stream_name):
    resources = stack.resources()
    resources["completion_stream"] = RedisCompletionStream(redis_url="redis://127.0.0.1:1/0", stream=stream_name)
    assert stack.sync(resources=resources).success
    with connect(pg_url, autocommit=True) as conn:
        (event,) = pending(conn, schema)
        # The relay published, then died before marking the outbox row: the row is still pending.
        assert publish_once(redis_client, stream_name, event, ttl=3600) is True
        result = relay_pending(conn, schema, redis_client, stream_name, ttl=3600)
        assert result.already_on_stream == [event.event_id] and result.published == []
    assert redis_client.xlen(stream_name) == 1
