from dagster import Definitions, ScheduleDefinition, DefaultScheduleStatus

from garden_pipeline.defs.events.jobs import apply_events_job, purge_inbox_job, replay_dead_letters_job
from garden_pipeline.defs.events.sensor import inbox_sensor


def build_defs() -> Definitions:
    return Definitions(
        jobs=[apply_events_job, replay_dead_letters_job, purge_inbox_job],
        sensors=[inbox_sensor],
        schedules=[
            ScheduleDefinition(name="purge_inbox_daily", job=purge_inbox_job, cron_schedule="30 3 * * *",
                               execution_timezone="UTC", default_status=DefaultScheduleStatus.RUNNING,
                               description="Inbox retention: settled events older than 7 days.")
        ],
    )
