"""One benchmark method, run as its own process so its peak RSS is its own (the parent reads wait4's rusage).

    python bench/methods.py METHOD --pg URL --schema S [--mg URL] [--extract FILE] [--limit N]
Prints one JSON object: seconds, rows and method-specific figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import libpq_url
from garden_pipeline.gatewaydb.tables import VERSION_COLUMN


def copy_limit(args) -> dict:
    """psycopg COPY of the already-parsed extract into empty tables; foreign keys added after."""
    document = json.loads(Path(args.extract).read_bytes())  # parsed before the clock starts
    migrate.upgrade(args.pg, args.schema)
    with psycopg.connect(libpq_url(args.pg)) as conn:
        fks = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND connamespace = %s::regnamespace", (args.schema,)).fetchall()
        for table, name, _ in fks:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        conn.commit()
        started = time.perf_counter()
        rows = 0
        with conn.cursor() as cur:
            for entity in CATALOGUE:
                cols = [*entity.field_names, VERSION_COLUMN]
                stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(args.schema, entity.table), sql.SQL(", ").join(map(sql.Identifier, cols)))
                generated = document["generated_at"]
                with cur.copy(stmt) as copy:
                    for row in document.get(entity.extract_key) or []:
                        copy.write_row([row.get(f) for f in entity.field_names] + [generated])
                        rows += 1
        for table, name, definition in fks:
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        conn.commit()
        return {"seconds": time.perf_counter() - started, "rows": rows}


def garden(args) -> dict:
    """The real assets (extract multi-asset, eight GatewayDB assets, completion) via materialize()."""
    from dagster import DagsterInstance, materialize

    from garden_pipeline.defs.notify.completion import sync_completed
    from garden_pipeline.defs.sync.extract_assets import model_garden_extract
    from garden_pipeline.defs.sync.gateway_assets import gateway_assets
    from garden_pipeline.resources import ModelGardenClient, PostgresGatewayDB, RedisCompletionStream

    instance = DagsterInstance.ephemeral()
    resources = {
        "model_garden": ModelGardenClient(url=args.mg, read_timeout=600),
        "gateway_db": PostgresGatewayDB(db_url=args.pg, db_schema=args.schema),
        "completion_stream": RedisCompletionStream(redis_url=args.redis, stream=f"bench:{args.schema}"),
    }
    migrate.upgrade(args.pg, args.schema)
    started = time.perf_counter()
    result = materialize([model_garden_extract, *gateway_assets, sync_completed], resources=resources,
                         instance=instance, raise_on_error=False,
                         run_config={"ops": {f"gatewaydb__{e.plural}": {"config": {"allow_large_delete": True}}
                                             for e in CATALOGUE}})
    wall = time.perf_counter() - started
    if not result.success:
        raise SystemExit("garden sync failed")
    steps: dict[str, float] = {}
    starts = {}
    for ev in instance.all_logs(result.run_id):
        de = ev.dagster_event
        if de is None or de.step_key is None:
            continue
        if de.event_type_value == "STEP_START":
            starts[de.step_key] = ev.timestamp
        elif de.event_type_value == "STEP_SUCCESS":
            steps[de.step_key] = ev.timestamp - starts[de.step_key]
    written = {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    for mat in result.get_asset_materialization_events():
        md = mat.materialization.metadata
        if mat.materialization.asset_key.path[0] == "gatewaydb":
            for k in written:
                written[k] += md[k].value
    data = steps.get("model_garden_extract", 0) + sum(v for k, v in steps.items() if k.startswith("gatewaydb__"))
    return {"seconds": wall, "data_seconds": data, "dagster_overhead_seconds": wall - data, **written,
            "steps": {k: round(v, 3) for k, v in steps.items()},
            "rows": written["inserted"] + written["updated"] + written["unchanged"]}




def dlt_merge(args) -> dict:
    """dlt with write_disposition=merge, primary_key=id, reading the same extract file item by item."""
    import dlt
    import ijson

    def entity_resource(entity):
        @dlt.resource(name=entity.table, write_disposition="merge", primary_key="id")
        def rows():
            with open(args.extract, "rb") as f:
                yield from ijson.items(f, f"{entity.extract_key}.item", use_float=True)

        return rows

    from urllib.parse import urlsplit

    u = urlsplit(libpq_url(args.pg))
    # dlt requires a password field; with trust auth any value is ignored by the server.
    credentials = {"database": u.path.lstrip("/"), "username": u.username or "postgres",
                   "password": u.password or "unused", "host": u.hostname or "127.0.0.1", "port": u.port or 5432}
    pipeline = dlt.pipeline(pipeline_name=f"bench_{args.schema}", destination=dlt.destinations.postgres(
        credentials=credentials), dataset_name=args.schema, pipelines_dir=str(Path(args.extract).parent / "dlt"))
    started = time.perf_counter()
    info = pipeline.run([entity_resource(e)() for e in CATALOGUE])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "loads": len(info.loads_ids)}


def orm_baseline(args) -> dict:
    """The naive design: per row, SELECT by id through the ORM, then INSERT or UPDATE."""
    from sqlalchemy import MetaData, create_engine
    from sqlalchemy.ext.automap import automap_base
    from sqlalchemy.orm import Session

    from garden_pipeline.extract.validate import parse_timestamp
    from garden_pipeline.gatewaydb.connection import sqlalchemy_url

    document = json.loads(Path(args.extract).read_bytes())
    migrate.upgrade(args.pg, args.schema)
    engine = create_engine(sqlalchemy_url(args.pg))
    metadata = MetaData(schema=args.schema)
    base = automap_base(metadata=metadata)
    base.prepare(autoload_with=engine)
    classes = {t.name: cls for cls in base.classes for t in [cls.__table__]}
    generated = parse_timestamp(document["generated_at"])
    done = 0
    started = time.perf_counter()
    with Session(engine) as session:
        for entity in CATALOGUE:
            cls = classes[entity.table]
            for row in (document.get(entity.extract_key) or []):
                if done >= args.limit:
                    break
                values = {f: row.get(f) for f in entity.field_names}
                obj = session.get(cls, row["id"])
                if obj is None:
                    session.add(cls(**values, **{VERSION_COLUMN: generated}))
                else:
                    for k, v in values.items():
                        setattr(obj, k, v)
                session.flush()
                done += 1
        session.commit()
    return {"seconds": time.perf_counter() - started, "rows": done}


METHODS = {"copy_limit": copy_limit, "garden": garden, "dlt_merge": dlt_merge, "orm_baseline": orm_baseline}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=METHODS)
    ap.add_argument("--pg", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--mg")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--extract")
    ap.add_argument("--limit", type=int, default=20_000)
    a = ap.parse_args()
    print(json.dumps(METHODS[a.method](a)))
    sys.stdout.flush()
