from dagster import Definitions

from garden_pipeline.defs.housekeeping.runs import purge_old_runs_job, purge_old_runs_schedule


def build_defs() -> Definitions:
    return Definitions(jobs=[purge_old_runs_job], schedules=[purge_old_runs_schedule])
