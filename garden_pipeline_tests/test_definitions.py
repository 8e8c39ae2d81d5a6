"""The code location loads, and its asset graph is the one operators expect (a snapshot)."""

from __future__ import annotations

from garden_pipeline.catalogue import CATALOGUE, by_name
from garden_pipeline.definitions import defs

EXPECTED_DEPS = {
    "extract/projects": set(),
    "extract/use_cases": set(),
    "extract/use_case_budgets": set(),
    "extract/models": set(),
    "extract/model_deployments": set(),
    "extract/llm_model_pricing": set(),
    "extract/subscriptions": set(),
    "extract/llm_model_limits": set(),
    "gatewaydb/projects": {"extract/projects"},
    "gatewaydb/use_cases": {"extract/use_cases", "gatewaydb/projects"},
    "gatewaydb/use_case_budgets": {"extract/use_case_budgets", "gatewaydb/use_cases"},
    "gatewaydb/models": {"extract/models"},
    "gatewaydb/model_deployments": {"extract/model_deployments", "gatewaydb/models"},
    "gatewaydb/llm_model_pricing": {"extract/llm_model_pricing", "gatewaydb/models"},
    "gatewaydb/subscriptions": {"extract/subscriptions", "gatewaydb/use_cases", "gatewaydb/models"},
    "gatewaydb/llm_model_limits": {"extract/llm_model_limits", "gatewaydb/subscriptions"},
    "redis/sync_completed": {f"gatewaydb/{e.plural}" for e in CATALOGUE},
    "events/inbox": set(),
}


def _graph():
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }


def test_asset_graph_snapshot():
    assert _graph() == EXPECTED_DEPS


def test_writes_follow_foreign_key_order():
    graph = _graph()
    order = []
    remaining = dict(graph)
    while remaining:
        ready = sorted(k for k, deps in remaining.items() if deps <= set(order))
        assert ready, f"cycle among {sorted(remaining)}"
        order += ready
        for k in ready:
            del remaining[k]
    position = {k: i for i, k in enumerate(order)}
    for e in CATALOGUE:
        for parent in e.parents.values():
            assert position[f"gatewaydb/{by_name(parent).plural}"] < position[f"gatewaydb/{e.plural}"]


def test_jobs_schedules_and_sensors_are_defined():
    full = defs.resolve_job_def("full_sync_job")
    incremental = defs.resolve_job_def("incremental_sync_job")
    assert full.tags["garden/sync"] == incremental.tags["garden/sync"] == "gatewaydb"
    assert defs.resolve_schedule_def("full_sync_schedule").cron_schedule == "0 * * * *"
    assert defs.resolve_schedule_def("incremental_sync_schedule").cron_schedule == "*/5 * * * *"
    assert defs.resolve_sensor_def("outbox_relay_sensor").minimum_interval_seconds == 30
    extract_cfg = full.run_config_schema.config_type.fields["ops"]  # the Launchpad exposes the run options
    assert "model_garden_extract" in extract_cfg.config_type.fields


def test_extract_assets_are_subsettable_per_entity():
    graph = defs.resolve_asset_graph()
    extract = graph.get(next(k for k in graph.get_all_asset_keys() if k.to_user_string() == "extract/models"))
    assert extract.assets_def.can_subset


def test_every_entity_has_its_checks():
    keys = {f"{k.asset_key.to_user_string()}:{k.name}" for k in defs.resolve_asset_graph().asset_check_keys}
    for e in CATALOGUE:
        for check in ("schema_drift", "rejected_rows", "volume_drift"):
            assert f"extract/{e.plural}:{check}" in keys
        for check in ("content_drift", "freshness"):
            assert f"gatewaydb/{e.plural}:{check}" in keys
        assert (f"gatewaydb/{e.plural}:referential_integrity" in keys) == bool(e.parents)
    assert {"events/inbox:inbox_backlog", "events/inbox:parked_events", "events/inbox:dead_letters"} <= keys
