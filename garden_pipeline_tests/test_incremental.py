"""Incremental sync: only what changed since the watermark; the watermark moves only with committed writes."""

from __future__ import annotations


from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.gatewaydb.apply import read_watermarks
from garden_pipeline_tests.harness import failure_messages, live_rows, metadata, versions


def _watermarks(pg_url, schema):
    with connect(pg_url) as conn:
        return read_watermarks(conn, schema)


def _requested_since(sim) -> str | None:
    return sim.faults.log()[-1].query


def test_incremental_pulls_changes_since_the_watermark(stack, sim, db, schema, pg_url):
    full = stack.sync()
    assert full.success
    generated_at = metadata(full, "extract/projects")["generated_at"]
    marks = _watermarks(pg_url, schema)
    assert {m.isoformat() for m in marks.values()} == {generated_at}

    project = sorted(sim.state.snapshot()["project"])[0]
    sim.state.update("project", project, project_name="Renamed in Model Garden")
    before = versions(db, schema, "project")
    result = stack.sync(mode="incremental")
    assert result.success, failure_messages(result)
    assert "updated_since=" in _requested_since(sim)
    md = metadata(result, "gatewaydb/projects")
    assert (md["inserted"], md["updated"], md["deleted"]) == (0, 1, 0)
    assert md["unchanged"] < sim.state.count("project")  # not a full extract
    after = versions(db, schema, "project")
    assert {k for k in after if after[k] != before[k]} == {project}
    assert live_rows(db, schema, "project")[project]["project_name"] == "Renamed in Model Garden"
    new_marks = _watermarks(pg_url, schema)
    assert all(new_marks[e] > marks[e] for e in marks)


def test_incremental_never_deletes(stack, sim, db, schema):
    assert stack.sync().success
    victim = sorted(sim.state.snapshot()["llm_model_limit"])[0]
    sim.state.delete("llm_model_limit", victim)
    result = stack.sync(mode="incremental")
    assert result.success, failure_messages(result)
    assert metadata(result, "gatewaydb/llm_model_limits")["deleted"] == 0
    assert victim in live_rows(db, schema, "llm_model_limit")


def test_watermark_advances_only_when_the_writes_commit(stack, sim, db, schema, pg_url):
    assert stack.sync().success
    marks = _watermarks(pg_url, schema)
    sim.faults.add({"status": 503}, times=10)
    failed = stack.sync(mode="incremental", resources=stack.resources(max_attempts=2))
    assert not failed.success
    assert _watermarks(pg_url, schema) == marks
    # A failure in one entity's write leaves that entity's watermark where it was.
    sim.faults.clear()
    sim.faults.add("invalid_json")
    assert not stack.sync(mode="incremental").success
    assert _watermarks(pg_url, schema) == marks


def test_explicit_updated_since_repulls_a_past_window(stack, sim, db, schema):
    assert stack.sync().success
    result = stack.sync(mode="incremental", updated_since="2000-01-01T00:00:00Z")
    assert result.success, failure_messages(result)
    assert "updated_since=2000-01-01" in _requested_since(sim)
    md = metadata(result, "gatewaydb/subscriptions")
    assert md["unchanged"] == sim.state.count("subscription")
    assert md["inserted"] == md["updated"] == 0


def test_updated_since_with_full_mode_is_refused_with_a_reason(stack, sim):
    result = stack.sync(mode="full", updated_since="2025-01-01T00:00:00Z")
    assert not result.success
    assert "mode: incremental" in failure_messages(result)
    assert sim.faults.requests == 0


def test_first_incremental_without_watermark_reads_everything_but_deletes_nothing(stack, sim, db, schema):
    result = stack.sync(mode="incremental")
    assert result.success, failure_messages(result)
    assert "updated_since" not in (_requested_since(sim) or "")
    assert len(live_rows(db, schema, "model")) == sim.state.count("model")
