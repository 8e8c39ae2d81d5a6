"""What Model Garden can do wrong, and what the sync does about it."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from garden_pipeline.catalogue import ENTITIES
from garden_pipeline.simulator import SimulatorServer
from garden_pipeline_tests.harness import Stack, failure_messages, live_rows, metadata, versions


def _count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def _stage_tables(db, schema) -> set[str]:
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_name LIKE 'stage_%%'",
        (f"{schema}_sync",),
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("error", ["missing_field", "wrong_type", "bad_money", "dangling_parent"])
def test_invalid_rows_are_rejected_and_the_rest_sync(stack, sim, db, schema, error):
    sim.faults.add("invalid_rows", entity="llm_model_pricing" if error == "bad_money" else "use_case",
                   count=1, error=error)
    result = stack.sync()
    assert result.success, failure_messages(result)
    entity = "llm_model_pricing" if error == "bad_money" else "use_case"
    plural = "llm_model_pricing" if entity == "llm_model_pricing" else "use_cases"
    assert metadata(result, f"gatewaydb/{plural}")["rejected"] == 1
    reasons = db.execute(f'SELECT entity, record_id, reason, raw FROM "{schema}_sync".rejected_records').fetchall()
    own = [r for r in reasons if r[0] == entity]
    assert len(own) == 1
    _, record_id, reason, raw = own[0]
    assert raw is not None and record_id
    expected_word = {"missing_field": "missing", "wrong_type": "must be", "bad_money": "money",
                     "dangling_parent": "not found in GatewayDB"}[error]
    assert expected_word in reason
    # Children of a rejected row cannot be written either: they are rejected for their missing parent.
    for child_entity, _, child_reason, _ in reasons:
        if child_entity != entity:
            assert "not found in GatewayDB" in child_reason
    # Every other row synced.
    assert len(live_rows(db, schema, entity)) == sim.state.count(entity) - 1
    assert len(live_rows(db, schema, "project")) == sim.state.count("project")


def test_invalid_row_already_in_gatewaydb_is_kept_not_deleted(stack, sim, db, schema):
    assert stack.sync().success
    sim.faults.add("invalid_rows", entity="model", count=1, error="wrong_type")
    result = stack.sync()
    assert result.success, failure_messages(result)
    md = metadata(result, "gatewaydb/models")
    assert md["rejected"] == 1 and md["deleted"] == 0
    assert len(live_rows(db, schema, "model")) == sim.state.count("model")


def test_unknown_fields_do_not_break_the_sync_and_are_recorded(stack, sim, db, schema):
    sim.faults.add("extra_fields", entity="model", fields={"tier": "gold", "owner": {"team": "x"}})
    result = stack.sync()
    assert result.success, failure_messages(result)
    md = metadata(result, "extract/models")
    assert set(md["unknown_fields"]) == {"tier", "owner"}
    assert md["rejected"] == 0
    unknown = db.execute(
        f"SELECT unknown_fields FROM \"{schema}_sync\".landed_extracts WHERE entity = 'model'"
    ).fetchone()[0]
    assert set(unknown) == {"tier", "owner"}
    assert len(live_rows(db, schema, "model")) == sim.state.count("model")


def test_duplicate_ids_keep_one_row_and_reject_the_others(stack, sim, db, schema):
    sim.faults.add("duplicate_ids", entity="subscription", count=2)
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert metadata(result, "extract/subscriptions")["duplicates"] == 2
    assert len(live_rows(db, schema, "subscription")) == sim.state.count("subscription")
    assert _count(db, f"SELECT count(*) FROM \"{schema}_sync\".rejected_records WHERE reason LIKE '%%duplicate id%%'") == 2


@pytest.mark.parametrize("bits, max_suspects", [(8, 100_000), (8, 3)])
def test_duplicates_found_when_the_seen_bits_alarm_on_every_id(stack, sim, db, schema, monkeypatch, bits,
                                                                 max_suspects):
    """The loader's bit set only narrows the search: with 8 bits every id is a suspect, and with a low
    suspect limit PostgreSQL checks all ids; either way exactly the real duplicates are dropped."""
    from garden_pipeline.gatewaydb import staging

    monkeypatch.setattr(staging, "_SEEN_BITS", bits)
    monkeypatch.setattr(staging, "_MAX_SUSPECTS", max_suspects)
    sim.faults.add("duplicate_ids", entity="subscription", count=2)
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert metadata(result, "extract/subscriptions")["duplicates"] == 2
    assert metadata(result, "extract/projects")["duplicates"] == 0
    assert len(live_rows(db, schema, "subscription")) == sim.state.count("subscription")
    assert len(live_rows(db, schema, "project")) == sim.state.count("project")


@pytest.mark.parametrize("fault", [{"truncate": 20000}, {"invalid_json": True}])
def test_broken_body_writes_nothing(stack, sim, db, schema, fault):
    assert stack.sync().success
    before = {e: versions(db, schema, e) for e in ENTITIES}
    stages = _stage_tables(db, schema)
    landed = _count(db, f'SELECT count(*) FROM "{schema}_sync".landed_extracts')
    sim.state.mutate(20, rng_seed=3)
    sim.faults.add(fault)
    result = stack.sync()
    assert not result.success
    message = failure_messages(result)
    expected = ("cut off", "broke after") if "truncate" in fault else ("not valid JSON",)
    assert any(word in message for word in expected), message
    assert {e: versions(db, schema, e) for e in ENTITIES} == before
    assert _stage_tables(db, schema) == stages
    assert _count(db, f'SELECT count(*) FROM "{schema}_sync".landed_extracts') == landed
    assert _count(db, f'SELECT count(*) FROM "{schema}_sync".rejected_records') == 0


def test_429_with_retry_after_is_honoured_and_retried(stack, sim, db, schema):
    sim.faults.add({"status": 429, "retry_after": 1}, times=2)
    instance = DagsterInstance.ephemeral()
    result = stack.sync(instance=instance)
    assert result.success, failure_messages(result)
    assert sim.faults.requests == 3
    waits = [e.user_message for e in instance.all_logs(result.run_id) if "retrying in" in e.user_message]
    assert len(waits) == 2 and all("429" in w and "retrying in 1.0s" in w for w in waits)
    assert len(live_rows(db, schema, "project")) == sim.state.count("project")


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 502}, {"status": 503}, {"reset": True}, {"slow": 6}])
def test_transient_failures_are_retried(stack, sim, db, schema, fault):
    sim.faults.add(fault, times=2)
    # The read timeout must time out the slow answers, yet leave a busy CI machine room to answer the third.
    result = stack.sync(resources=stack.resources(read_timeout=2.5))
    assert result.success, failure_messages(result)
    assert sim.faults.requests == 3
    assert len(live_rows(db, schema, "llm_model_limit")) == sim.state.count("llm_model_limit")


def test_retries_give_up_with_a_clear_error(stack, sim, db, schema):
    sim.faults.add({"status": 503}, times=10)
    result = stack.sync(resources=stack.resources(max_attempts=3))
    assert not result.success
    assert "failed 3 times; last error: HTTP 503" in failure_messages(result)
    assert sim.faults.requests == 3
    assert live_rows(db, schema, "project") == {}


def test_bearer_token_is_sent_and_a_refusal_is_not_retried(pg_url, schema, redis_url_or_file, stream_name, db):
    with SimulatorServer(scale=60, token="s3cret-token") as sim:
        good = Stack(pg_url, schema, sim.url, redis_url_or_file, stream_name, token="s3cret-token")
        assert good.sync().success
        bad = Stack(pg_url, schema, sim.url, redis_url_or_file, stream_name, token="wrong-token")
        result = bad.sync()
        assert not result.success
        message = failure_messages(result)
        assert "HTTP 401" in message and "MODEL_GARDEN_TOKEN" in message
        assert "wrong-token" not in message and "s3cret-token" not in message
        assert sim.faults.requests == 2
