from dagster import Definitions

from garden_pipeline.checks.thresholds import Thresholds
from garden_pipeline.defs.checks.gateway_checks import gateway_checks
from garden_pipeline.defs.checks.inbox_checks import INBOX, build_inbox_checks
from garden_pipeline.defs.checks.repair import repair_drift_job


def build_defs() -> Definitions:
    thresholds = Thresholds.from_env()
    inbox_health, job, schedule = build_inbox_checks(thresholds)
    return Definitions(
        assets=[INBOX],
        asset_checks=[*gateway_checks(thresholds), inbox_health],
        jobs=[job, repair_drift_job],
        schedules=[schedule],
    )
