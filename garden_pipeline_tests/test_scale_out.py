"""Two receiver processes on one machine share the inbox: every event is stored once, whichever got it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from garden_pipeline.gatewaydb import migrate
from garden_pipeline.serving import free_port, wait_until_ok
from garden_pipeline_tests.events_harness import apply, event, inbox_rows, post, project, start_receiver

BIN = Path(sys.executable).parent


class ReceiverProcess:
    """`garden-pipeline serve-events` as its own OS process, as a replica behind a load balancer runs."""

    def __init__(self, pg_url: str, schema: str, tmp: Path):
        port = free_port()
        env = {**os.environ, "GATEWAY_DB_URL": pg_url, "GATEWAY_DB_SCHEMA": schema, "GARDEN_HOME": str(tmp)}
        env.pop("GARDEN_EVENTS_SECRET", None)
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(BIN / "garden-pipeline"), "serve-events", "--port", str(port),
                                      "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_until_ok(self.url + "/api/v1/model-garden/health", 120)  # imports Dagster, migrates: slow on a busy box
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def test_two_receivers_behind_a_balancer_store_each_event_once(pg_url, schema, db, tmp_path):
    migrate.upgrade(pg_url, schema)
    first, second = ReceiverProcess(pg_url, schema, tmp_path), ReceiverProcess(pg_url, schema, tmp_path)
    assert first.proc.pid != second.proc.pid
    try:
        events = [event("CREATED", "project", f"p{i}", "2025-07-15T14:00:00Z",
                        project(f"p{i}", "Scaled", "2025-07-15T14:00:00Z"), event_id=f"e{i}") for i in range(40)]
        for i, e in enumerate(events):
            target, other = (first, second) if i % 2 else (second, first)
            assert post(target.url, e).status_code == 200
            assert post(other.url, e).status_code == 200  # the pusher retried via the other replica
        assert len(inbox_rows(db, schema)) == 40
        assert apply(pg_url, schema).states["applied"] == 40
        for receiver in (first, second):
            metrics = httpx.get(receiver.url + "/metrics").text
            assert 'garden_events_acknowledged_total{result="stored"}' in metrics
            assert 'garden_inbox_events{state="pending"} 0.0' in metrics
        stored = sum(float(line.split()[-1]) for r in (first, second) for line in httpx.get(r.url + "/metrics").text
                     .splitlines() if line.startswith('garden_events_acknowledged_total{result="stored"}'))
        assert stored == 40
    finally:
        first.stop()
        second.stop()


def test_metrics_count_rejections_by_reason(pg_url, schema):
    receiver = start_receiver(pg_url, schema, secrets=["s3cret"])
    try:
        post(receiver.url, event("DELETED", "project", "p1", "2025-07-15T14:00:00Z"))  # unsigned
        post(receiver.url, {"event_type": "NOPE"}, "s3cret")
        metrics = httpx.get(receiver.url + "/metrics").text
        assert 'garden_events_rejected_total{reason="signature"} 1.0' in metrics
        assert 'garden_events_rejected_total{reason="validation"} 1.0' in metrics
        assert "s3cret" not in metrics
    finally:
        receiver.stop()
