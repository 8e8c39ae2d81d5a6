"""Asset keys, derived from the catalogue."""

from dagster import AssetKey

from garden_pipeline.catalogue import CATALOGUE, Entity

EXTRACT_GROUP = "model_garden_extract"
GATEWAY_GROUP = "gatewaydb"


def extract_key(entity: Entity) -> AssetKey:
    return AssetKey(["extract", entity.plural])


def gateway_key(entity: Entity) -> AssetKey:
    return AssetKey(["gatewaydb", entity.plural])


EXTRACT_KEYS = {e.name: extract_key(e) for e in CATALOGUE}
GATEWAY_KEYS = {e.name: gateway_key(e) for e in CATALOGUE}
COMPLETION_KEY = AssetKey(["redis", "sync_completed"])
