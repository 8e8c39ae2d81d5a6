"""GatewayDB assets: one per entity, each applying its landed extract in one transaction.

Dependencies follow the foreign keys (projects before use cases before
budgets ...), so a child is written only after its parents in the same run.
"""


from dagster import AssetExecutionContext, AssetsDefinition, Failure, MaterializeResult, MetadataValue, asset
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE, Entity, by_name
from garden_pipeline.checks.extract_findings import too_many_rejected
from garden_pipeline.checks.thresholds import Thresholds
from garden_pipeline.defs.sync.config import GatewayWriteConfig
from garden_pipeline.defs.sync.keys import EXTRACT_KEYS, GATEWAY_GROUP, GATEWAY_KEYS
from garden_pipeline.gatewaydb.apply import DeleteGuardError, DeletePolicy, EntityCounts, apply_landed
from garden_pipeline.gatewaydb.sql import entity_table
from garden_pipeline.gatewaydb.staging import drop_stale_stages, find_landed
from garden_pipeline.resources import GatewayDBResource


def counts_metadata(c: EntityCounts, watermark: str) -> dict:
    rows = c.inserted + c.updated + c.unchanged + c.stale
    metadata = {
        "mode": c.mode,
        "dry_run": c.dry_run,
        "inserted": MetadataValue.int(c.inserted),
        "updated": MetadataValue.int(c.updated),
        "deleted": MetadataValue.int(c.deleted),
        "unchanged": MetadataValue.int(c.unchanged),
        "rejected": MetadataValue.int(c.rejected),
        "stale": MetadataValue.int(c.stale),
        # rows compared with GatewayDB; the others were provably untouched since the last full apply
        "compared": MetadataValue.int(c.compared),
        "duration_s": MetadataValue.float(round(c.seconds, 3)),
        "rows_per_s": MetadataValue.float(round(rows / c.seconds, 1) if c.seconds > 0 else 0.0),
        "watermark": watermark,
        "preview": MetadataValue.md(_preview(c)),
    }
    return metadata


def _preview(c: EntityCounts) -> str:
    lines = [
        f"**{c.entity}** ({c.mode}{', dry run: nothing written' if c.dry_run else ''})",
        "",
        "| action | rows | sample ids |",
        "|---|---:|---|",
    ]
    for action in ("inserted", "updated", "deleted", "unchanged", "rejected", "stale"):
        sample = ", ".join(f"`{i}`" for i in c.samples.get(action, []))
        lines.append(f"| {action} | {getattr(c, action)} | {sample} |")
    return "\n".join(lines)


def _model_breakdown(conn, schema: str) -> dict:
    """Live models by provider, family and capability, for the UI's plots of the catalogue's shape."""
    table = entity_table(schema, by_name("model"))
    out = {}
    for label, expr in (("provider", "provider"), ("family", "model_family"), ("capability", "unnest(capabilities)")):
        rows = conn.execute(
            sql.SQL("SELECT {e} AS k, count(*) FROM {t} WHERE deleted_at IS NULL GROUP BY 1 ORDER BY 2 DESC, 1")
            .format(e=sql.SQL(expr), t=table)
        ).fetchall()
        out[f"models_by_{label}"] = MetadataValue.json({str(k): n for k, n in rows})
    return out


def build_gateway_asset(entity: Entity) -> AssetsDefinition:
    parents = sorted(set(entity.parents.values()))

    @asset(
        key=GATEWAY_KEYS[entity.name],
        deps=[EXTRACT_KEYS[entity.name], *(GATEWAY_KEYS[p] for p in parents)],
        group_name=GATEWAY_GROUP,
        description=f"GatewayDB table `{entity.table}`: live {entity.plural} as Model Garden has them "
        f"(tombstoned with deleted_at when deleted upstream).",
        kinds={"postgres"},
        metadata={"table": entity.table, "entity_type": entity.name, "parents": ", ".join(parents) or "-"},
    )
    def _write(context: AssetExecutionContext, config: GatewayWriteConfig, gateway_db: GatewayDBResource):
        schema = gateway_db.db_schema
        thresholds = Thresholds.from_env()
        with gateway_db.connect() as conn:
            ref = find_landed(conn, schema, entity.name, context.run.run_id)
            if ref is None:
                raise RuntimeError(
                    f"no extract of {entity.plural} is waiting to be applied: materialise "
                    f"extract/{entity.plural} in the same run"
                )
            total = ref.rows + ref.rejected
            if not config.allow_rejected and too_many_rejected(ref.rejected, total, thresholds.max_rejected_fraction,
                                                                thresholds.rejected_rows_floor):
                raise Failure(
                    description=f"blocked by extract/{entity.plural}'s rejected_rows check: {ref.rejected} of {total} "
                    f"rows were invalid (see {schema}_sync.rejected_records); nothing was written. Fix Model Garden "
                    "or re-run with allow_rejected: true.",
                    metadata={"rejected": ref.rejected, "rows": total},
                    allow_retries=False,
                )
            policy = DeletePolicy(config.max_delete_fraction, config.delete_guard_min_rows, config.allow_large_delete)
            try:
                counts = apply_landed(conn, schema, ref, context.run.run_id, policy)
            except DeleteGuardError as exc:
                # A Failure shows the guard's verdict and numbers in the UI, not a stack trace.
                raise Failure(
                    description=str(exc),
                    metadata={"live_rows": exc.live, "would_delete": exc.to_delete, "extract_rows": exc.extract_rows},
                    allow_retries=False,
                ) from None
            drop_stale_stages(conn, schema, entity.name, keep=set())
            context.log.info(
                f"{entity.plural}: {counts.inserted} inserted, {counts.updated} updated, {counts.deleted} deleted, "
                f"{counts.unchanged} unchanged, {counts.rejected} rejected, {counts.stale} stale"
                f"{' (dry run, nothing written)' if counts.dry_run else ''}"
            )
            metadata = counts_metadata(counts, ref.generated_at.isoformat())
            if entity.name == "model":
                metadata.update(_model_breakdown(conn, schema))
        return MaterializeResult(metadata=metadata)

    return _write


gateway_assets = [build_gateway_asset(e) for e in CATALOGUE]
