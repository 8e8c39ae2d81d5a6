"""Full sync: the extract lands in GatewayDB field by field, and only changes are written."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal


import pytest

from garden_pipeline.catalogue import CATALOGUE, ENTITIES
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, live_rows, metadata, versions


def test_full_sync_into_empty_db_equals_extract_field_by_field(stack, sim, db, schema):
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert_db_equals_state(db, schema, sim.state.snapshot())
    total = sum(metadata(result, f"gatewaydb/{e.plural}")["inserted"] for e in CATALOGUE)
    assert total == sum(sim.state.counts().values())
    # Every table it filled has planner statistics, whatever autovacuum does (-1: never analysed): the next
    # sync's joins are planned for the rows there are, not for an empty table.
    unanalysed = db.execute("SELECT array_agg(relname ORDER BY relname) FROM pg_class "
                            "WHERE relnamespace = %s::regnamespace AND relkind = 'r' AND reltuples < 0",
                            (schema,)).fetchone()[0]
    assert unanalysed is None


def test_second_identical_full_sync_writes_zero_rows(stack, db, schema):
    assert stack.sync().success
    before = {e: versions(db, schema, e) for e in ENTITIES}
    result = stack.sync()
    assert result.success, failure_messages(result)
    for e in CATALOGUE:
        md = metadata(result, f"gatewaydb/{e.plural}")
        assert (md["inserted"], md["updated"], md["deleted"]) == (0, 0, 0), e.name
        assert md["unchanged"] > 0
        assert versions(db, schema, e.name) == before[e.name], f"{e.name}: a row was rewritten"


def test_a_changed_row_updates_exactly_that_row(stack, sim, db, schema):
    assert stack.sync().success
    before = versions(db, schema, "llm_model_pricing")
    price_id = sorted(before)[0]
    sim.state.update("llm_model_pricing", price_id, input_price_per_1k_tokens="0.0999")
    result = stack.sync()
    assert result.success, failure_messages(result)
    md = metadata(result, "gatewaydb/llm_model_pricing")
    assert (md["inserted"], md["updated"], md["deleted"]) == (0, 1, 0)
    # An unchanged entity's rows were staged from the first sync's extract, the array's last element too.
    limits = metadata(result, "extract/llm_model_limits")
    assert limits["carried_over"] == limits["rows"] > 0
    # The changed price was staged anew, after the carried rows: the one row out of the extract's order.
    assert (metadata(result, "extract/llm_model_pricing")["scattered"], limits["scattered"]) == (1, 0)
    after = versions(db, schema, "llm_model_pricing")
    assert {k for k in after if after[k] != before[k]} == {price_id}
    assert live_rows(db, schema, "llm_model_pricing")[price_id]["input_price_per_1k_tokens"] == Decimal("0.0999")


def test_row_absent_from_full_extract_is_tombstoned(stack, sim, db, schema):
    assert stack.sync().success
    limit_id = sorted(sim.state.snapshot()["llm_model_limit"])[0]
    sim.state.delete("llm_model_limit", limit_id)
    result = stack.sync()
    assert result.success, failure_messages(result)
    assert metadata(result, "gatewaydb/llm_model_limits")["deleted"] == 1
    deleted_at, = db.execute(
        f'SELECT deleted_at FROM "{schema}".llm_model_limits WHERE id = %s', (limit_id,)
    ).fetchone()
    assert isinstance(deleted_at, datetime), "the row is kept, with a tombstone"
    assert limit_id not in live_rows(db, schema, "llm_model_limit")


def test_delete_guard_trips_and_leaves_db_untouched(stack, sim, db, schema):
    assert stack.sync().success
    before = versions(db, schema, "subscription")
    sim.faults.add("drop_fraction", entity="subscription", fraction=0.5)
    result = stack.sync()
    assert not result.success
    message = failure_messages(result)
    assert "delete guard" in message and "subscriptions" in message
    assert versions(db, schema, "subscription") == before
    # The parents were written (unchanged) and nothing downstream of the failure ran.
    assert db.execute(f'SELECT count(*) FROM "{schema}_sync".outbox').fetchone()[0] == 1


def test_delete_guard_can_be_overridden_on_purpose(stack, sim, db, schema):
    assert stack.sync().success
    live = len(live_rows(db, schema, "subscription"))
    sim.faults.add("drop_fraction", entity="subscription", fraction=0.5)
    result = stack.sync(gateway_config={"allow_large_delete": True})
    assert result.success, failure_messages(result)
    deleted = metadata(result, "gatewaydb/subscriptions")["deleted"]
    assert deleted > 0.3 * live
    assert len(live_rows(db, schema, "subscription")) == live - deleted


def test_empty_extract_refused_while_table_has_rows(stack, sim, db, schema):
    assert stack.sync().success
    before = {e: versions(db, schema, e) for e in ENTITIES}
    sim.faults.add("empty")
    result = stack.sync()
    assert not result.success
    assert "has no projects" in failure_messages(result)
    assert {e: versions(db, schema, e) for e in ENTITIES} == before


def test_dry_run_reports_and_writes_nothing(stack, sim, db, schema):
    assert stack.sync().success
    before = {e: versions(db, schema, e) for e in ENTITIES}
    sim.state.update("model", sorted(sim.state.snapshot()["model"])[0], model_name="renamed-model")
    victim = sorted(sim.state.snapshot()["llm_model_limit"])[0]
    sim.state.delete("llm_model_limit", victim)
    result = stack.sync(dry_run=True)
    assert result.success, failure_messages(result)
    models = metadata(result, "gatewaydb/models")
    assert models["dry_run"] is True and models["updated"] == 1
    limits = metadata(result, "gatewaydb/llm_model_limits")
    assert limits["deleted"] == 1 and victim in limits["preview"]
    assert {e: versions(db, schema, e) for e in ENTITIES} == before
    assert metadata(result, "redis/sync_completed")["published"] is False
    assert db.execute(f'SELECT count(*) FROM "{schema}_sync".run_counts').fetchone()[0] == len(ENTITIES)


def test_single_entity_rematerialisation_touches_only_that_entity(stack, sim, db, schema):
    assert stack.sync().success
    before = {e: versions(db, schema, e) for e in ENTITIES}
    model_id = sorted(sim.state.snapshot()["model"])[0]
    sim.state.update("model", model_id, model_name="only-models-changed")
    sim.state.update("project", sorted(sim.state.snapshot()["project"])[0], project_name="not-synced-yet")
    result = stack.sync(entities=["model"])
    assert result.success, failure_messages(result)
    keys = {ev.materialization.asset_key.to_user_string() for ev in result.get_asset_materialization_events()}
    assert keys == {"extract/models", "gatewaydb/models", "redis/sync_completed"}
    after = {e: versions(db, schema, e) for e in ENTITIES}
    for e in ENTITIES:
        if e != "model":
            assert after[e] == before[e], f"{e} was touched"
    assert {k for k in after["model"] if after["model"][k] != before["model"][k]} == {model_id}


@pytest.mark.slow
def test_landing_memory_stays_flat_as_the_extract_grows(pg_url, schema):
    """The extract is streamed: Python's peak allocation landing 200k rows is about that of 20k rows."""
    import tracemalloc

    import httpx

    from garden_pipeline.gatewaydb import migrate
    from garden_pipeline.gatewaydb.connection import connect
    from garden_pipeline.gatewaydb.staging import land_extract
    from garden_pipeline.simulator import SimulatorServer

    migrate.upgrade(pg_url, schema)
    peaks = {}
    for scale in (20_000, 200_000):
        with SimulatorServer(scale=scale, seed=1) as server, connect(pg_url, autocommit=True) as conn:
            with httpx.stream("GET", server.url + "/model-garden/sync/all", timeout=120) as response:
                tracemalloc.start()
                landed = land_extract(conn, schema, f"mem-{scale}", response.iter_bytes(), ENTITIES, mode="full")
                peaks[scale] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        assert sum(le.rows for le in landed.entities.values()) >= scale * 0.9
    assert peaks[200_000] < 32 * 2**20, peaks
    assert peaks[200_000] < 2 * peaks[20_000] + 4 * 2**20, peaks
