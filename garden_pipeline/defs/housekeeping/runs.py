"""Run retention: Dagster keeps run history forever unless told otherwise.

dagster.yaml's ``retention`` covers schedule and sensor ticks only; this job
deletes finished runs (and their event logs) older than N days, so a
five-minute schedule does not grow Dagster's storage without bound.
"""

from datetime import datetime, timedelta, timezone

from dagster import (
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    RunsFilter,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from garden_pipeline.settings import env

_FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


class RunRetentionConfig(Config):
    older_than_days: float = Field(default=float(env("GARDEN_RUN_RETENTION_DAYS", "30")), ge=0,
                                   description="Delete finished runs created longer ago than this "
                                   "(GARDEN_RUN_RETENTION_DAYS).")
    batch: int = Field(default=500, ge=1, description="Runs deleted per query.")


@op(description="Delete finished runs older than the retention period, with their event logs.")
def purge_old_runs(context: OpExecutionContext, config: RunRetentionConfig) -> int:
    cutoff = datetime.now(timezone.utc) - timedelta(days=config.older_than_days)
    deleted = 0
    while True:
        records = context.instance.get_run_records(
            filters=RunsFilter(statuses=_FINISHED, created_before=cutoff), limit=config.batch)
        records = [r for r in records if r.dagster_run.run_id != context.run.run_id]
        if not records:
            break
        for record in records:
            context.instance.delete_run(record.dagster_run.run_id)
            deleted += 1
    context.add_output_metadata({"deleted_runs": MetadataValue.int(deleted), "cutoff": cutoff.isoformat()})
    return deleted


@job(executor_def=in_process_executor, description="Run retention: delete finished runs older than N days.")
def purge_old_runs_job():
    purge_old_runs()


purge_old_runs_schedule = ScheduleDefinition(
    name="purge_old_runs_daily", job=purge_old_runs_job, cron_schedule="45 3 * * *", execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING, description="Delete finished runs older than 30 days.")
