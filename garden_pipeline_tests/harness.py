"""Running the real sync assets against a test's schema, stream and simulator."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg
from dagster import AssetKey, DagsterInstance, materialize

from garden_pipeline.catalogue import CATALOGUE, FieldType, by_name
from garden_pipeline.extract.validate import parse_timestamp
from garden_pipeline.defs.notify.completion import sync_completed
from garden_pipeline.defs.sync.extract_assets import model_garden_extract
from garden_pipeline.defs.sync.gateway_assets import gateway_assets
from garden_pipeline.defs.sync.keys import COMPLETION_KEY
from garden_pipeline.gatewaydb.tables import DELETED_COLUMN
from garden_pipeline.resources import (
    EmbeddedCompletionStream,
    ModelGardenClient,
    PostgresGatewayDB,
    RedisCompletionStream,
)

ALL_ASSETS = [model_garden_extract, *gateway_assets, sync_completed]


def checked_assets():
    """The sync assets plus every GatewayDB asset check, as a deployment runs them."""
    from garden_pipeline.checks.thresholds import Thresholds
    from garden_pipeline.defs.checks.gateway_checks import gateway_checks

    return [*ALL_ASSETS, *gateway_checks(Thresholds.from_env())]


@dataclass
class Stack:
    pg_url: str
    schema: str
    model_garden_url: str
    redis: tuple[str | None, str | None]
    stream: str
    token: str | None = None

    def resources(self, **model_garden_overrides) -> dict:
        url, file = self.redis
        stream = (
            RedisCompletionStream(redis_url=url, stream=self.stream)
            if url
            else EmbeddedCompletionStream(db_file=file, stream=self.stream)
        )
        mg = dict(url=self.model_garden_url, token=self.token, backoff_initial=0.01, backoff_max=0.05,
                  read_timeout=5.0)
        mg.update(model_garden_overrides)
        return {
            "model_garden": ModelGardenClient(**mg),
            "gateway_db": PostgresGatewayDB(db_url=self.pg_url, db_schema=self.schema),
            "completion_stream": stream,
        }

    def sync(
        self,
        mode: str = "full",
        entities: list[str] | None = None,
        dry_run: bool = False,
        updated_since: str | None = None,
        gateway_config: dict | None = None,
        resources: dict | None = None,
        instance: DagsterInstance | None = None,
        with_checks: bool = False,
        only_extract: bool = False,
    ):
        extract_cfg = {"mode": mode, "dry_run": dry_run}
        if updated_since:
            extract_cfg["updated_since"] = updated_since
        ops = {"model_garden_extract": {"config": extract_cfg}}
        if gateway_config:
            for e in CATALOGUE if entities is None else [by_name(n) for n in entities]:
                ops[f"gatewaydb__{e.plural}"] = {"config": gateway_config}
        selection = None
        if entities is not None or only_extract:
            names = entities if entities is not None else [e.name for e in CATALOGUE]
            selection = [AssetKey(["extract", by_name(n).plural]) for n in names]
            if not only_extract:
                selection += [AssetKey(["gatewaydb", by_name(n).plural]) for n in names] + [COMPLETION_KEY]
        return materialize(
            checked_assets() if with_checks else ALL_ASSETS,
            resources=resources or self.resources(),
            run_config={"ops": ops},
            selection=selection,
            raise_on_error=False,
            instance=instance,
        )


def metadata(result, key: str) -> dict:
    """Materialization metadata of asset ``key`` (e.g. 'gatewaydb/models') as plain values."""
    for ev in result.get_asset_materialization_events():
        m = ev.materialization
        if m.asset_key.to_user_string() == key:
            return {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    raise KeyError(key)


def failure_messages(result) -> str:
    """Every step failure's message, with its causes."""
    out = []
    for ev in result.all_events:
        if ev.is_step_failure:
            err = ev.step_failure_data.error
            while err is not None:
                out.append(err.message)
                err = err.cause
    return "\n".join(out)


def live_rows(conn: psycopg.Connection, schema: str, entity: str) -> dict[str, dict]:
    """entity id -> contract fields of live rows, as JSON-comparable values."""
    e = by_name(entity)
    cols = ", ".join(f'"{c}"' for c in e.field_names)
    rows = conn.execute(
        f'SELECT {cols} FROM "{schema}"."{e.table}" WHERE "{DELETED_COLUMN}" IS NULL'
    ).fetchall()
    return {r[0]: dict(zip(e.field_names, r)) for r in rows}


def versions(conn: psycopg.Connection, schema: str, entity: str) -> dict[str, str]:
    """id -> xmin: changes whenever PostgreSQL writes a new version of the row."""
    e = by_name(entity)
    return dict(conn.execute(f'SELECT id, xmin::text FROM "{schema}"."{e.table}"').fetchall())


def _expected(value, ftype: FieldType):
    """Model Garden's JSON value as GatewayDB's column returns it."""
    if value is None:
        return None
    if ftype is FieldType.TIMESTAMP:
        return parse_timestamp(value)
    if ftype in (FieldType.MONEY, FieldType.NUMBER):
        return Decimal(str(value))
    return value


def assert_db_equals_state(db, schema: str, snapshot: dict) -> None:
    """GatewayDB's live rows equal a Model Garden snapshot (entity -> id -> row), field by field."""
    for entity in CATALOGUE:
        rows = live_rows(db, schema, entity.name)
        want = snapshot[entity.name]
        assert set(rows) == set(want), f"{entity.name}: ids differ"
        for rid, row in want.items():
            for f in entity.fields:
                got = rows[rid][f.name]
                exp = _expected(row.get(f.name), f.type)
                assert got == exp, f"{entity.name} {rid}.{f.name}: {got!r} != {exp!r}"
                if f.type is FieldType.MONEY:
                    assert str(got) == row[f.name], "money keeps Model Garden's exact digits"


def check_results(result) -> dict[str, object]:
    """'asset/key:check_name' -> AssetCheckEvaluation for every check that ran."""
    out = {}
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            data = ev.event_specific_data
            out[f"{data.asset_key.to_user_string()}:{data.check_name}"] = data
    return out
