"""The two sync jobs and their schedules."""


from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from garden_pipeline.defs.sync.keys import COMPLETION_KEY, EXTRACT_GROUP, GATEWAY_GROUP
from garden_pipeline.settings import Settings

_SELECTION = AssetSelection.groups(EXTRACT_GROUP, GATEWAY_GROUP) | AssetSelection.assets(COMPLETION_KEY)
# One GatewayDB sync at a time: dagster.yaml limits runs carrying this tag.
SYNC_TAGS = {"garden/sync": "gatewaydb"}


def _job(name: str, mode: str, description: str):
    return define_asset_job(
        name,
        selection=_SELECTION,
        description=description,
        tags={**SYNC_TAGS, "garden/mode": mode},
        config={"ops": {"model_garden_extract": {"config": {"mode": mode}}}},
    )


full_sync_job = _job(
    "full_sync_job",
    "full",
    "Full /sync/all into GatewayDB: upserts changed rows, tombstones rows Model Garden no longer has "
    "(behind the delete guard), then announces sync.completed on Redis.",
)
incremental_sync_job = _job(
    "incremental_sync_job",
    "incremental",
    "Rows changed since the watermark into GatewayDB (upserts only), then sync.completed on Redis.",
)


def schedules(settings: Settings) -> list[ScheduleDefinition]:
    return [
        ScheduleDefinition(
            name="full_sync_schedule",
            job=full_sync_job,
            cron_schedule=settings.full_sync_cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            description="GARDEN_FULL_SYNC_CRON (default hourly)",
        ),
        ScheduleDefinition(
            name="incremental_sync_schedule",
            job=incremental_sync_job,
            cron_schedule=settings.incremental_sync_cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            description="GARDEN_INCREMENTAL_SYNC_CRON (default every 5 minutes)",
        ),
    ]
