"""Checks on each GatewayDB asset, generated from the catalogue."""

from dagster import AssetCheckExecutionContext, AssetChecksDefinition, asset_check

from garden_pipeline.catalogue import CATALOGUE, Entity
from garden_pipeline.checks import gateway_findings as gf
from garden_pipeline.checks.thresholds import Thresholds
from garden_pipeline.defs.checks.results import to_result
from garden_pipeline.defs.sync.keys import GATEWAY_KEYS
from garden_pipeline.resources import GatewayDBResource


def build_gateway_checks(entity: Entity, thresholds: Thresholds) -> list[AssetChecksDefinition]:
    key = GATEWAY_KEYS[entity.name]
    name = entity.name

    @asset_check(asset=key, name="content_drift",
                 description="Live rows equal the latest full extract (hash per entity, per id bucket, then per id).")
    def content_drift(context: AssetCheckExecutionContext, gateway_db: GatewayDBResource):
        with gateway_db.connect() as conn:
            return to_result(gf.content_drift(conn, gateway_db.db_schema, name, thresholds.drift_max_ids))

    @asset_check(asset=key, name="freshness",
                 description=f"Synced successfully within {thresholds.freshness_warn} (WARN) / "
                 f"{thresholds.freshness_error} (ERROR).")
    def freshness(context: AssetCheckExecutionContext, gateway_db: GatewayDBResource):
        with gateway_db.connect() as conn:
            return to_result(gf.freshness(conn, gateway_db.db_schema, name, thresholds.freshness_warn,
                                          thresholds.freshness_error))

    checks = [content_drift, freshness]
    if entity.parents:
        @asset_check(asset=key, name="referential_integrity",
                     description="No live row points at a missing or deleted parent.")
        def referential_integrity(context: AssetCheckExecutionContext, gateway_db: GatewayDBResource):
            with gateway_db.connect() as conn:
                return to_result(gf.referential_integrity(conn, gateway_db.db_schema, name, thresholds.drift_max_ids))

        checks.append(referential_integrity)
    if name in gf.RULED_ENTITIES:
        @asset_check(asset=key, name="business_rules",
                     description="Contract sanity rules: negative or jumping prices, non-positive budgets, "
                     "zero limits on active subscriptions.")
        def business_rules(context: AssetCheckExecutionContext, gateway_db: GatewayDBResource):
            with gateway_db.connect() as conn:
                return to_result(gf.business_rules(conn, gateway_db.db_schema, name, thresholds.price_jump_factor,
                                                   thresholds.drift_max_ids))

        checks.append(business_rules)
    return checks


def gateway_checks(thresholds: Thresholds) -> list[AssetChecksDefinition]:
    return [c for e in CATALOGUE for c in build_gateway_checks(e, thresholds)]
