"""`garden-pipeline dev`: under the real Dagster daemon, a POSTed event reaches GatewayDB by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from garden_pipeline.gatewaydb import migrate
from garden_pipeline.serving import free_port, wait_until_ok
from garden_pipeline_tests.events_harness import event, project

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_event_posted_to_dev_stack_is_applied_by_the_daemon(tmp_path, pg_url, schema, db):
    migrate.upgrade(pg_url, schema)
    ui, events_port = free_port(), free_port()
    env = {**os.environ, "GATEWAY_DB_URL": pg_url, "GATEWAY_DB_SCHEMA": schema, "GARDEN_HOME": str(tmp_path),
           "GARDEN_FULL_SYNC_CRON": "0 0 1 1 *", "GARDEN_INCREMENTAL_SYNC_CRON": "0 0 1 1 *",
           "GARDEN_SIMULATOR_SCALE": "60"}
    for var in ("DAGSTER_HOME", "MODEL_GARDEN_URL", "GARDEN_EVENTS_SECRET"):
        env.pop(var, None)
    proc = subprocess.Popen(
        [str(BIN / "garden-pipeline"), "dev", "--port", str(ui), "--events-port", str(events_port),
         "--push-interval", "0"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        wait_until_ok(f"http://127.0.0.1:{events_port}/api/v1/model-garden/health", 180)
        wait_until_ok(f"http://127.0.0.1:{ui}/server_info", deadline - time.monotonic())
        body = event("CREATED", "project", "dev-1", "2025-07-15T14:00:00Z",
                     project("dev-1", "From the daemon", "2025-07-15T14:00:00Z"))
        assert httpx.post(f"http://127.0.0.1:{events_port}/api/v1/model-garden/events", json=body).status_code == 200
        while time.monotonic() < deadline:
            row = db.execute(f'SELECT project_name FROM "{schema}".projects WHERE id = %s', ("dev-1",)).fetchone()
            if row:
                break
            time.sleep(0.5)
        assert row == ("From the daemon",), "the inbox sensor never applied the event"
        assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
