"""A receiver killed (SIGKILL) in the middle of a load loses no event it acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from garden_pipeline.gatewaydb import migrate
from garden_pipeline.serving import free_port, wait_until_ok
from garden_pipeline_tests.events_harness import event, project

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_sigkill_mid_load_loses_no_acknowledged_event(pg_url, schema, db, tmp_path):
    migrate.upgrade(pg_url, schema)
    port = free_port()
    env = {**os.environ, "GATEWAY_DB_URL": pg_url, "GATEWAY_DB_SCHEMA": schema, "GARDEN_HOME": str(tmp_path)}
    env.pop("GARDEN_EVENTS_SECRET", None)
    proc = subprocess.Popen([str(BIN / "garden-pipeline"), "serve-events", "--port", str(port), "--log-level",
                             "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            for i in range(3000):  # bounded in count ...
                if stop.is_set():
                    return
                eid = f"w{worker}-{i}"
                body = event("CREATED", "project", f"p-{eid}", "2025-07-15T14:00:00Z",
                             project(f"p-{eid}", "Load", "2025-07-15T14:00:00Z"), event_id=eid)
                try:
                    r = client.post(url + "/api/v1/model-garden/events", json=body)
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked.append(eid)

    try:
        wait_until_ok(url + "/api/v1/model-garden/health", 120)
        workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60  # ... and in time
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 200, "the load did not get going before the kill"
    stored = {r[0] for r in db.execute(f'SELECT event_id FROM "{schema}_sync".inbox').fetchall()}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
