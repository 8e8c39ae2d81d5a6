"""The event path's health as checks on the inbox, evaluated on a schedule."""

from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetSelection,
    AssetSpec,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
    multi_asset_check,
)

from garden_pipeline.checks import gateway_findings as gf
from garden_pipeline.checks.thresholds import Thresholds
from garden_pipeline.defs.checks.results import to_result
from garden_pipeline.resources import GatewayDBResource

INBOX = AssetSpec(
    key=["events", "inbox"],
    group_name="events",
    description="Model Garden's pushed events waiting in <schema>_sync.inbox (written by the events receiver).",
    kinds={"postgres"},
)
_CHECKS = ("inbox_backlog", "parked_events", "dead_letters")


def build_inbox_checks(thresholds: Thresholds):
    @multi_asset_check(
        specs=[AssetCheckSpec(name, asset=INBOX.key) for name in _CHECKS],
        description="Backlog older than a threshold, parked and dead-lettered events.",
    )
    def inbox_health(gateway_db: GatewayDBResource):
        with gateway_db.connect() as conn:
            for name, finding in gf.inbox_health(conn, gateway_db.db_schema, thresholds.backlog_warn,
                                                 thresholds.backlog_error):
                yield to_result(finding, asset_key=INBOX.key, check_name=name)

    job = define_asset_job("event_path_checks_job", selection=AssetSelection.checks(*(AssetCheckKey(INBOX.key, n) for n in _CHECKS)),
                           description="Evaluate the inbox health checks.")
    schedule = ScheduleDefinition(name="event_path_checks_schedule", job=job, cron_schedule="*/5 * * * *",
                                  default_status=DefaultScheduleStatus.RUNNING, execution_timezone="UTC")
    return inbox_health, job, schedule
