"""Process death and hostile input: the next run converges; nothing is executed or leaked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from garden_pipeline.gatewaydb.apply import read_watermarks
from garden_pipeline_tests.events_harness import apply, event, inbox_rows, post, project, start_receiver
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages, live_rows, versions
from garden_pipeline_tests.test_faults_postgres import TableLock, _blocked_backend

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_run_worker_sigkilled_mid_sync_then_the_next_run_converges(stack, sim, db, schema, pg_url, tmp_path,
                                                                  redis_url_or_file):
    assert stack.sync().success
    marks = read_watermarks(db, schema)
    before = versions(db, schema, "subscription")
    sim.state.mutate(20, rng_seed=12, kinds=("UPDATED", "CREATED"))
    redis_url, _ = redis_url_or_file
    env = {**os.environ, "GATEWAY_DB_URL": pg_url, "GATEWAY_DB_SCHEMA": schema, "MODEL_GARDEN_URL": sim.url,
           "DAGSTER_HOME": str(tmp_path), "GARDEN_HOME": str(tmp_path), **({"REDIS_URL": redis_url} if redis_url else {})}
    lock = TableLock(pg_url, schema, "subscriptions")
    proc = subprocess.Popen([str(BIN / "dagster"), "job", "execute", "-m", "garden_pipeline", "-j", "full_sync_job"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _blocked_backend(pg_url, "subscriptions", timeout=90)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        lock.release()
    time.sleep(1)  # the orphaned backend finds its client gone and rolls back
    assert versions(db, schema, "subscription") == before
    now = read_watermarks(db, schema)
    assert now["subscription"] == marks["subscription"] and now["llm_model_limit"] == marks["llm_model_limit"]
    assert now["project"] >= marks["project"]  # committed before the kill: its watermark may move, and only it
    retry = stack.sync()
    assert retry.success, failure_messages(retry)
    assert_db_equals_state(db, schema, sim.state.snapshot())


HOSTILE = [
    "'); DROP TABLE projects; --",
    "<script>alert(1)</script>",
    "Robert\"; DELETE FROM inbox WHERE '1'='1",
    "${jndi:ldap://x}",
    "\u202e\u0301 ünïcødé 😀",
]


def test_sql_and_script_looking_strings_are_stored_verbatim(pg_url, schema, db):
    receiver = start_receiver(pg_url, schema)
    try:
        for i, text in enumerate(HOSTILE):
            body = event("CREATED", "project", f"hostile-{i}", "2025-07-15T14:00:00Z",
                         project(f"hostile-{i}", text, "2025-07-15T14:00:00Z"))
            assert post(receiver.url, body).status_code == 200
    finally:
        receiver.stop()
    apply(pg_url, schema)
    stored = live_rows(db, schema, "project")
    assert [stored[f"hostile-{i}"]["project_name"] for i in range(len(HOSTILE))] == HOSTILE
    assert db.execute(f'SELECT count(*) FROM "{schema}".projects').fetchone()[0] == len(HOSTILE)


def test_ids_at_the_length_limit_are_accepted_and_over_it_refused(pg_url, schema, db):
    receiver = start_receiver(pg_url, schema)
    try:
        at = "p" * 128
        assert post(receiver.url, event("CREATED", "project", at, "2025-07-15T14:00:00Z",
                                        project(at, "Long", "2025-07-15T14:00:00Z"))).status_code == 200
        over = "p" * 129
        r = post(receiver.url, event("CREATED", "project", over, "2025-07-15T14:00:00Z",
                                     project(over, "Long", "2025-07-15T14:00:00Z")))
        assert r.status_code == 422 and "at most 128" in r.json()["message"]
        huge = {"event_type": "DELETED", "entity_type": "project", "entity_id": "x", "timestamp": "2025-07-15T14:00:00Z",
                "payload": {"k" * 10: ["v" * 100] * 5000}}
        assert post(receiver.url, huge).status_code == 200  # a large but valid DELETED payload is only ignored
    finally:
        receiver.stop()
    assert len(inbox_rows(db, schema)) == 2


def test_secrets_stay_out_of_errors_logs_and_metadata(stack, sim, pg_url, schema, redis_url_or_file, stream_name):
    from dagster import DagsterInstance

    from garden_pipeline.gatewaydb.connection import connect as gw_connect

    token = "tok-4c7f9d1e-very-secret"
    secret_url = "postgresql://garden:pa55-w0rd-secret@127.0.0.1:1/gateway"
    with pytest.raises(Exception) as err:
        gw_connect(secret_url)
    assert "pa55-w0rd-secret" not in str(err.value) and "***" in str(err.value)

    from garden_pipeline.simulator import SimulatorServer
    from garden_pipeline_tests.harness import Stack

    with SimulatorServer(scale=60, token=token) as guarded:
        instance = DagsterInstance.ephemeral()
        good = Stack(pg_url, schema, guarded.url, redis_url_or_file, stream_name, token=token)
        assert good.sync(instance=instance).success
        bad = Stack(pg_url, schema, guarded.url, redis_url_or_file, stream_name, token=token + "-wrong")
        failed = bad.sync(instance=instance)
        assert not failed.success
    assert len(instance.get_runs()) == 2
    everything = json.dumps([str(e.dagster_event or "") + e.user_message
                             for run in instance.get_runs() for e in instance.all_logs(run.run_id)])
    assert "HTTP 401" in everything  # the failure is explained ...
    assert "very-secret" not in everything  # ... without the token, in logs, errors or metadata
