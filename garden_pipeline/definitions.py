"""The code location's root definitions: every area, plus the policy that applies to all of them.

Cross-cutting policy lives here: which implementation of each resource this
deployment uses (from the environment), and the executor. Sync steps run in
one process: the heavy lifting happens inside PostgreSQL, the steps are a
chain in foreign-key order anyway, and a process per step would add seconds
of start-up to every run on a 2-core box.
"""

from dagster import Definitions, in_process_executor

from garden_pipeline.defs.checks.definitions import build_defs as checks_defs
from garden_pipeline.defs.events.definitions import build_defs as events_defs
from garden_pipeline.defs.housekeeping.definitions import build_defs as housekeeping_defs
from garden_pipeline.defs.notify.definitions import build_defs as notify_defs
from garden_pipeline.defs.sync.definitions import build_defs as sync_defs
from garden_pipeline.resources.select import build_resources
from garden_pipeline.settings import Settings

settings = Settings.from_env()

defs = Definitions.merge(
    sync_defs(settings),
    notify_defs(),
    events_defs(),
    checks_defs(),
    housekeeping_defs(),
    Definitions(resources=build_resources(settings), executor=in_process_executor),
)
