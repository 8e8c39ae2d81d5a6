"""The production dagster.yaml loads and runs a job with Dagster's storage on PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from dagster import DagsterInstance

from garden_pipeline.gatewaydb.connection import libpq_url
from garden_pipeline.simulator import SimulatorServer
from garden_pipeline_tests.harness import Stack

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_DB = "garden_dagster_test"


def _tcp_server(pg_url: str):
    parts = urlsplit(libpq_url(pg_url))
    return parts if parts.hostname else None


def test_production_instance_file_runs_a_job_on_postgres(tmp_path, monkeypatch, pg_url, schema,
                                                        redis_url_or_file, stream_name):
    parts = _tcp_server(pg_url)
    if parts is None:
        pytest.skip("dagster-postgres needs a TCP PostgreSQL; the embedded one listens on a socket only")
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DAGSTER_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DAGSTER_DB}"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    for key, value in {"DAGSTER_PG_HOST": parts.hostname, "DAGSTER_PG_PORT": str(parts.port or 5432),
                       "DAGSTER_PG_USER": parts.username or "postgres", "DAGSTER_PG_PASSWORD": parts.password or "",
                       "DAGSTER_PG_DB": DAGSTER_DB}.items():
        monkeypatch.setenv(key, value)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "garden/sync", "value": "gatewaydb", "limit": 1} in limits
        with SimulatorServer(scale=60, seed=2) as sim:
            result = Stack(pg_url, schema, sim.url, redis_url_or_file, stream_name).sync(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success


def test_embedded_instance_file_runs_a_job_on_sqlite(tmp_path, pg_url, schema, redis_url_or_file, stream_name):
    from garden_pipeline.cli import EMBEDDED_INSTANCE_YAML

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_INSTANCE_YAML)
    with DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        with SimulatorServer(scale=60, seed=2) as sim:
            result = Stack(pg_url, schema, sim.url, redis_url_or_file, stream_name).sync(instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
    assert list(home.glob("**/*.db")), "runs are kept in SQLite files under DAGSTER_HOME"


def test_run_retention_deletes_finished_runs_older_than_the_cutoff():
    from garden_pipeline.defs.housekeeping.runs import purge_old_runs_job

    with DagsterInstance.ephemeral() as instance:
        old = [purge_old_runs_job.execute_in_process(
            instance=instance, run_config={"ops": {"purge_old_runs": {"config": {"older_than_days": 365}}}})
            for _ in range(2)]
        assert len(instance.get_runs()) == 2 and all(r.success for r in old)
        keep = purge_old_runs_job.execute_in_process(
            instance=instance, run_config={"ops": {"purge_old_runs": {"config": {"older_than_days": 365}}}})
        assert keep.output_for_node("purge_old_runs") == 0  # nothing is a year old
        purge = purge_old_runs_job.execute_in_process(
            instance=instance, run_config={"ops": {"purge_old_runs": {"config": {"older_than_days": 0}}}})
        assert purge.output_for_node("purge_old_runs") == 3
        assert [r.run_id for r in instance.get_runs()] == [purge.run_id]
