"""Load held: a steady stream of pushed events while scheduled incremental syncs run.

GARDEN_SOAK_SECONDS sets the length (default 60 s in CI; docs/reliability.md
reports a longer run). At the end GatewayDB must equal the simulator, every
acknowledged event must be in the inbox, and the backlog must be drained.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from psycopg import sql

from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.gatewaydb.sql import sync_table
from garden_pipeline.simulator import EventPusher
from garden_pipeline_tests.events_harness import apply, start_receiver
from garden_pipeline_tests.harness import assert_db_equals_state, failure_messages

SECONDS = float(os.environ.get("GARDEN_SOAK_SECONDS", "60"))


@pytest.fixture
def sim_params() -> dict:
    return {"scale": 600, "seed": 21}


@pytest.mark.slow
def test_soak_pushed_events_and_incremental_syncs_converge(stack, sim, pg_url, schema, db, tmp_path):
    assert stack.sync().success
    receiver = start_receiver(pg_url, schema, secrets=["soak-secret"])
    stop = threading.Event()
    acked: list[str] = []
    sent = [0]
    backlog_max = [0]
    errors: list[BaseException] = []
    syncs: list[bool] = []

    def pusher():
        with EventPusher(receiver.url + "/api/v1/model-garden/events", secret="soak-secret") as push:
            seed = 0
            while not stop.is_set():
                seed += 1
                events = sim.state.mutate(4, rng_seed=seed)
                for e, r in zip(events, push.push(events)):
                    sent[0] += 1
                    if r.status_code == 200:
                        acked.append(e["event_id"])
                time.sleep(0.05)

    def applier():  # stands in for inbox_sensor + apply_events_job (tested on their own)
        while not stop.is_set():
            with connect(pg_url) as conn:
                pending = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE state = 'pending'").format(
                    sync_table(schema, "inbox"))).fetchone()[0]
            backlog_max[0] = max(backlog_max[0], pending)
            apply(pg_url, schema)
            time.sleep(1)

    def scheduler():
        while not stop.wait(8):
            result = stack.sync(mode="incremental")
            syncs.append(result.success)
            if not result.success:
                errors.append(AssertionError(failure_messages(result)))

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                stop.set()
        return threading.Thread(target=run)

    threads = [guarded(f) for f in (pusher, applier, scheduler)]
    started = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    receiver.stop()
    assert not errors, errors
    apply(pg_url, schema)
    apply(pg_url, schema)

    states = dict(db.execute(f'SELECT state, count(*) FROM "{schema}_sync".inbox GROUP BY state').fetchall())
    stored = {r[0] for r in db.execute(f'SELECT event_id FROM "{schema}_sync".inbox').fetchall()}
    report = {"seconds": round(time.monotonic() - started), "sent": sent[0], "acknowledged": len(acked),
              "states": states, "max_backlog": backlog_max[0], "incremental_syncs": len(syncs)}
    (tmp_path / "soak.json").write_text(json.dumps(report))
    print("soak:", json.dumps(report))
    assert len(acked) == sent[0] and len(acked) > 50
    assert set(acked) <= stored, "an acknowledged event is missing from the inbox"
    assert states.get("pending", 0) == 0 and states.get("parked", 0) == 0
    assert states.get("dead_lettered", 0) == 0
    assert syncs and all(syncs)
    assert_db_equals_state(db, schema, sim.state.snapshot())
