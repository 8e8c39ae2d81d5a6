"""Each check passes on a healthy sync and fails on the drift it is there to catch."""

from __future__ import annotations

from datetime import timedelta

from dagster import AssetCheckSeverity

from garden_pipeline.checks import gateway_findings as gf
from garden_pipeline.defs.checks.repair import repair_drift_job
from garden_pipeline.events import inbox
from garden_pipeline.events.envelope import validate_event
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline_tests.events_harness import apply, event
from garden_pipeline_tests.harness import check_results, failure_messages, versions


def _check(result, key):
    return check_results(result)[key]


def test_a_healthy_sync_passes_every_check(stack):
    result = stack.sync(with_checks=True)
    assert result.success, failure_messages(result)
    checks = check_results(result)
    assert len(checks) == 8 * 3 + 8 * 2 + 6 + 3  # extract x3, gateway drift+freshness, integrity, rules
    failing = {k: c.description for k, c in checks.items() if not c.passed}
    assert failing == {}


def test_schema_drift_warns_on_unknown_fields_and_errors_on_a_type_change(stack, sim):
    sim.faults.add("extra_fields", entity="model", fields={"tier": "gold"})
    sim.faults.add("invalid_rows", entity="use_case", count=1, error="wrong_type")
    result = stack.sync(with_checks=True)
    models = _check(result, "extract/models:schema_drift")
    assert not models.passed and models.severity == AssetCheckSeverity.WARN and "tier" in models.description
    use_cases = _check(result, "extract/use_cases:schema_drift")
    assert not use_cases.passed and use_cases.severity == AssetCheckSeverity.ERROR
    assert _check(result, "extract/projects:schema_drift").passed


def test_rejected_rows_over_the_threshold_block_that_write(stack, sim, db, schema):
    sim.faults.add("invalid_rows", entity="use_case", count=11, error="missing_field")
    result = stack.sync(with_checks=True)
    rejected = _check(result, "extract/use_cases:rejected_rows")
    assert not rejected.passed and rejected.severity == AssetCheckSeverity.ERROR
    assert "missing" in str(rejected.metadata["sample"].value)
    assert "blocked by extract/use_cases's rejected_rows check" in failure_messages(result)
    written = {e.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "gatewaydb/use_cases" not in written and "gatewaydb/subscriptions" not in written
    assert {"gatewaydb/projects", "gatewaydb/models", "gatewaydb/llm_model_pricing"} <= written  # the rest sync
    assert db.execute(f'SELECT count(*) FROM "{schema}".use_cases').fetchone()[0] == 0
    sim.faults.add("invalid_rows", entity="use_case", count=11, error="missing_field")
    allowed = stack.sync(gateway_config={"allow_rejected": True})
    assert allowed.success, failure_messages(allowed)
    assert db.execute(f'SELECT count(*) FROM "{schema}".use_cases').fetchone()[0] == 1


def test_volume_drift_warns_and_reports_the_delete_guard(stack, sim):
    assert stack.sync().success
    steady = stack.sync(with_checks=True)
    assert _check(steady, "extract/subscriptions:volume_drift").passed
    sim.faults.add("drop_fraction", entity="subscription", fraction=0.5)
    result = stack.sync(with_checks=True)
    drift = _check(result, "extract/subscriptions:volume_drift")
    assert not drift.passed and drift.severity == AssetCheckSeverity.WARN
    assert drift.metadata["delete_guard"].value == "would trip"


def test_content_drift_finds_rows_edited_behind_the_pipelines_back_and_repair_fixes_only_them(
        stack, sim, db, schema, pg_url):
    assert stack.sync().success
    ids = sorted(sim.state.snapshot()["model"])
    db.execute(f"UPDATE \"{schema}\".models SET model_name = 'tampered' WHERE id = %s", (ids[0],))
    db.execute(f"UPDATE \"{schema}\".models SET deleted_at = now() WHERE id = %s", (ids[1],))
    with connect(pg_url) as conn:
        finding = gf.content_drift(conn, schema, "model")
    assert not finding.passed and finding.severity == "ERROR"
    assert finding.metadata["drifting"] == 2
    assert finding.metadata["drifting_ids"] == [f"{ids[0]} (different)", f"{ids[1]} (missing)"]

    before = versions(db, schema, "model")
    resources = stack.resources()
    result = repair_drift_job.execute_in_process(
        resources=resources, run_config={"ops": {"repair_drift": {"config": {"entities": ["model"]}}}})
    assert result.success
    after = versions(db, schema, "model")
    assert {k for k in after if after[k] != before[k]} == {ids[0], ids[1]}
    with connect(pg_url) as conn:
        assert gf.content_drift(conn, schema, "model").passed


def test_content_drift_catches_dropped_events_against_a_newer_extract(stack, sim, db, schema, pg_url):
    assert stack.sync().success
    project = sorted(sim.state.snapshot()["project"])[0]
    events = sim.state.update("project", project, project_name="Renamed upstream")  # the event is lost
    assert events
    assert stack.sync(only_extract=True).success  # land a fresh extract, write nothing
    with connect(pg_url) as conn:
        finding = gf.content_drift(conn, schema, "project")
    assert not finding.passed and finding.metadata["drifting_ids"] == [f"{project} (different)"]


def test_referential_integrity_flags_live_children_of_deleted_parents(stack, sim, db, schema):
    assert stack.sync().success
    project = sorted(sim.state.snapshot()["project"])[0]
    db.execute(f'UPDATE "{schema}".projects SET deleted_at = now() WHERE id = %s', (project,))
    result = stack.sync(with_checks=True, entities=["use_case"])
    check = _check(result, "gatewaydb/use_cases:referential_integrity")
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    children = {u["id"] for u in sim.state.snapshot()["use_case"].values() if u["project_id"] == project}
    assert set(check.metadata["broken"].value["project_id"]) == children


def test_freshness_warns_then_errors(stack, db, schema, pg_url):
    assert stack.sync().success
    with connect(pg_url) as conn:
        assert gf.freshness(conn, schema, "model", timedelta(hours=2), timedelta(hours=6)).passed
        conn.execute(f"UPDATE \"{schema}_sync\".sync_state SET last_success_at = now() - interval '3 hours'")
        warn = gf.freshness(conn, schema, "model", timedelta(hours=2), timedelta(hours=6))
        conn.execute(f"UPDATE \"{schema}_sync\".sync_state SET last_success_at = now() - interval '7 hours'")
        error = gf.freshness(conn, schema, "model", timedelta(hours=2), timedelta(hours=6))
        conn.execute(f"DELETE FROM \"{schema}_sync\".sync_state WHERE entity = 'model'")
        never = gf.freshness(conn, schema, "model", timedelta(hours=2), timedelta(hours=6))
    assert (warn.passed, warn.severity) == (False, "WARN")
    assert (error.passed, error.severity) == (False, "ERROR")
    assert not never.passed and never.severity == "ERROR"


def test_business_rules_flag_bad_prices_budgets_and_limits(stack, sim, db, schema):
    snapshot = sim.state.snapshot()
    price = sorted(snapshot["llm_model_pricing"])[0]
    budget = sorted(snapshot["use_case_budget"])[0]
    sim.state.update("llm_model_pricing", price, input_price_per_1k_tokens="-0.0100")
    sim.state.update("use_case_budget", budget, budget_amount="0.00")
    active = {s for s, row in snapshot["subscription"].items() if row["status"] == "active"}
    limit = next(lid for lid, row in sorted(snapshot["llm_model_limit"].items()) if row["subscription_id"] in active)
    sim.state.update("llm_model_limit", limit, requests_per_minute=0)
    result = stack.sync(with_checks=True)
    assert result.success, failure_messages(result)
    pricing = _check(result, "gatewaydb/llm_model_pricing:business_rules")
    assert not pricing.passed and pricing.metadata["negative_price"].value["ids"] == [price]
    budgets = _check(result, "gatewaydb/use_case_budgets:business_rules")
    assert not budgets.passed and budgets.metadata["non_positive_budget"].value["ids"] == [budget]
    limits = _check(result, "gatewaydb/llm_model_limits:business_rules")
    assert not limits.passed and limit in limits.metadata["zero_limit_on_active_subscription"].value["ids"]


def test_price_jump_against_the_previous_price_of_the_same_model(stack, sim, db, schema, pg_url):
    snapshot = sim.state.snapshot()
    model = next(iter(sorted(snapshot["model"])))
    sim.state.create("llm_model_pricing", model_id=model, input_price_per_1k_tokens="1000.00",
                     effective_from="2099-01-01T00:00:00Z")
    assert stack.sync().success
    with connect(pg_url) as conn:
        finding = gf.business_rules(conn, schema, "llm_model_pricing", price_factor=10)
    assert not finding.passed and finding.metadata["price_jump"]["count"] >= 1


def test_inbox_health(pg_url, schema, db):
    from garden_pipeline.gatewaydb import migrate

    migrate.upgrade(pg_url, schema)
    with connect(pg_url) as conn:
        assert all(f.passed for _, f in gf.inbox_health(conn, schema, timedelta(seconds=60), timedelta(minutes=10)))
    with connect(pg_url, autocommit=True) as conn:
        inbox.store(conn, schema, [validate_event(event(
            "CREATED", "use_case", "u1", "2025-01-01T00:00:00Z",
            {"id": "u1", "project_id": "nope", "use_case_name": "n", "use_case_code": "c", "status": "active",
             "created_time": "2025-01-01T00:00:00Z", "updated_time": "2025-01-01T00:00:00Z"})),
            validate_event(event("DELETED", "project", "p9", "2025-01-01T00:00:00Z"))])
    apply(pg_url, schema, max_id=1)  # the use case parks; the delete stays pending
    db.execute(f"UPDATE \"{schema}_sync\".inbox SET received_at = now() - interval '20 minutes' WHERE state = 'pending'")
    with connect(pg_url) as conn:
        found = dict(gf.inbox_health(conn, schema, timedelta(seconds=60), timedelta(minutes=10)))
    assert (found["inbox_backlog"].passed, found["inbox_backlog"].severity) == (False, "ERROR")
    assert (found["parked_events"].passed, found["parked_events"].severity) == (False, "WARN")
    assert found["dead_letters"].passed
    db.execute(f"UPDATE \"{schema}_sync\".inbox SET state = 'dead_lettered' WHERE state = 'parked'")
    with connect(pg_url) as conn:
        found = dict(gf.inbox_health(conn, schema, timedelta(seconds=60), timedelta(minutes=10)))
    assert (found["dead_letters"].passed, found["dead_letters"].severity) == (False, "ERROR")
