"""The inbox sensor: one apply_events_job run per batch of new inbox rows.

The cursor is the highest inbox id already requested. Each tick requests
runs for the rows above it in batches of at most ``batch_size`` ids, each run
keyed by its id range, so a batch is never requested twice (Dagster drops a
repeated run_key) and the cursor never moves past what was requested. A run
applies every open row up to its upper id, so rows a failed run left pending
are picked up by the next one; parked events get a retry run once a minute
even when nothing new arrives.
"""

import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor
from psycopg import sql

from garden_pipeline.defs.events.jobs import apply_events_job
from garden_pipeline.gatewaydb.sql import sync_table
from garden_pipeline.resources import GatewayDBResource
from garden_pipeline.settings import env

BATCH_SIZE = int(env("GARDEN_INBOX_BATCH_SIZE", "10000"))  # type: ignore[arg-type]
INTERVAL = int(env("GARDEN_INBOX_SENSOR_INTERVAL", "2"))  # type: ignore[arg-type]
PARKED_RETRY_SECONDS = 60
MAX_RUNS_PER_TICK = 20


def plan_batches(conn, schema: str, cursor: int, batch_size: int, max_runs: int) -> list[tuple[int, int]]:
    """(first id, last id) of each batch of pending rows above ``cursor``."""
    ids = [r[0] for r in conn.execute(
        sql.SQL("SELECT id FROM {} WHERE state = 'pending' AND id > %s ORDER BY id LIMIT %s").format(
            sync_table(schema, "inbox")),
        (cursor, batch_size * max_runs),
    ).fetchall()]
    return [(chunk[0], chunk[-1]) for chunk in (ids[i:i + batch_size] for i in range(0, len(ids), batch_size))]


def build_inbox_sensor(batch_size: int = BATCH_SIZE, interval: int = INTERVAL):
    @sensor(
        name="inbox_sensor",
        job=apply_events_job,
        minimum_interval_seconds=interval,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Launches apply_events_job for each batch (≤ {batch_size}) of new inbox events.",
    )
    def inbox_sensor(context: SensorEvaluationContext, gateway_db: GatewayDBResource):
        cursor = int(context.cursor) if context.cursor else 0
        schema = gateway_db.db_schema
        with gateway_db.connect() as conn:
            batches = plan_batches(conn, schema, cursor, batch_size, MAX_RUNS_PER_TICK)
            parked = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE state = 'parked'").format(sync_table(schema, "inbox"))
            ).fetchone()[0]
        requests = [
            RunRequest(run_key=f"inbox:{lo}-{hi}", run_config={"ops": {"apply_events": {"config": {"max_id": hi}}}},
                       tags={"garden/inbox_batch": f"{lo}-{hi}"})
            for lo, hi in batches
        ]
        if not requests and parked:
            bucket = int(time.time() // PARKED_RETRY_SECONDS)
            requests.append(RunRequest(run_key=f"inbox:parked:{bucket}",
                                       run_config={"ops": {"apply_events": {"config": {"max_id": cursor}}}},
                                       tags={"garden/inbox_batch": "parked-retry"}))
        if not requests:
            return SkipReason(f"no new inbox events above id {cursor}")
        new_cursor = batches[-1][1] if batches else cursor
        return SensorResult(run_requests=requests, cursor=str(new_cursor))

    return inbox_sensor


inbox_sensor = build_inbox_sensor()
