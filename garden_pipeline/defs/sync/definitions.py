from dagster import Definitions

from garden_pipeline.defs.sync.extract_assets import model_garden_extract
from garden_pipeline.defs.sync.gateway_assets import gateway_assets
from garden_pipeline.defs.sync.jobs import full_sync_job, incremental_sync_job, schedules
from garden_pipeline.settings import Settings


def build_defs(settings: Settings) -> Definitions:
    return Definitions(
        assets=[model_garden_extract, *gateway_assets],
        jobs=[full_sync_job, incremental_sync_job],
        schedules=schedules(settings),
    )
