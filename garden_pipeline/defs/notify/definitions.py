from dagster import Definitions

from garden_pipeline.defs.notify.completion import sync_completed
from garden_pipeline.defs.notify.relay_sensor import outbox_relay_sensor


def build_defs() -> Definitions:
    return Definitions(assets=[sync_completed], sensors=[outbox_relay_sensor])
