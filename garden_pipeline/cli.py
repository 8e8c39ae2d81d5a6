"""``garden-pipeline``: the operator's and the newcomer's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from garden_pipeline.settings import Settings, garden_home


EMBEDDED_INSTANCE_YAML = """\
# Dagster instance for the embedded default, written by garden-pipeline.
# Storage: SQLite files in this folder. Production uses the repository's dagster.yaml.
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    dequeue_interval_seconds: 1  # pushed events should not wait on the queue
    tag_concurrency_limits:
      - key: garden/sync
        value: gatewaydb
        limit: 1
"""


def _dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to .garden/dagster_home with an embedded instance file."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(garden_home() / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
        instance_file = Path(home) / "dagster.yaml"
        if not instance_file.exists():
            instance_file.parent.mkdir(parents=True, exist_ok=True)
            instance_file.write_text(EMBEDDED_INSTANCE_YAML)
    Path(home).mkdir(parents=True, exist_ok=True)
    return Path(home)


def _resources():
    from garden_pipeline.resources.select import build_resources

    return build_resources(Settings.from_env())


def _run_config(args) -> dict:
    from garden_pipeline.catalogue import CATALOGUE

    ops: dict = {
        "model_garden_extract": {
            "config": {"mode": args.mode, "dry_run": args.dry_run, **({"updated_since": args.updated_since}
                                                                     if args.updated_since else {})}
        }
    }
    if args.allow_large_delete:
        for e in CATALOGUE:
            ops[f"gatewaydb__{e.plural}"] = {"config": {"allow_large_delete": True}}
    return {"ops": ops}


def execute_job(name: str, run_config: dict | None = None, **kwargs):
    """Run one of the code location's jobs in this process, recorded in DAGSTER_HOME like any run."""
    from dagster import DagsterInstance

    from garden_pipeline.definitions import defs

    _dagster_home()
    # The console shows warnings and failures only; everything is in the run's event log.
    config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with DagsterInstance.get() as instance:
        return defs.resolve_job_def(name).execute_in_process(
            run_config=config, instance=instance, raise_on_error=False, **kwargs)


def run_sync(args) -> int:
    """Run a sync job in this process against the configured (or embedded) stack."""
    from dagster import AssetKey

    selection = None
    if args.only:
        from garden_pipeline.catalogue import by_name
        from garden_pipeline.defs.sync.keys import COMPLETION_KEY

        entities = [by_name(n.strip()) for n in args.only.split(",")]
        selection = [AssetKey(["extract", e.plural]) for e in entities]
        selection += [AssetKey(["gatewaydb", e.plural]) for e in entities] + [COMPLETION_KEY]
    result = execute_job("full_sync_job" if args.mode == "full" else "incremental_sync_job", _run_config(args),
                         asset_selection=selection)
    _print_summary(result)
    return 0 if result.success else 1


def _print_summary(result) -> None:
    from garden_pipeline.catalogue import CATALOGUE

    order = {e.plural: i for i, e in enumerate(CATALOGUE)}
    rows = []
    event = None
    for mat in result.get_asset_materialization_events():
        m = mat.materialization
        key = m.asset_key.to_user_string()
        md = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        if key.startswith("gatewaydb/"):
            rows.append((key.split("/", 1)[1], md))
        elif key == "redis/sync_completed":
            event = md
    rows.sort(key=lambda r: order.get(r[0], 99))
    if rows:
        header = f"{'entity':<20}{'inserted':>10}{'updated':>10}{'deleted':>10}{'unchanged':>11}{'rejected':>10}"
        print(header)
        print("-" * len(header))
        for name, md in rows:
            print(f"{name:<20}{md['inserted']:>10}{md['updated']:>10}{md['deleted']:>10}"
                  f"{md['unchanged']:>11}{md['rejected']:>10}")
    if event:
        state = "published to Redis" if event.get("published") else "recorded in the outbox (Redis not reached)"
        print(f"\nsync.completed {event.get('event_id', '-')} {state}")
    if not result.success:
        for ev in result.all_events:
            if ev.is_step_failure:
                err = ev.step_failure_data.error
                print(f"\nstep {ev.step_key} failed: {err.message.strip() if err else ''}", file=sys.stderr)


def cmd_demo(args) -> int:
    """The README's main command: a full sync, then a few pushed events through the receiver."""
    settings = Settings.from_env()
    print("garden_pipeline demo: full sync of Model Garden into GatewayDB, then the real-time path")
    print(f"  Model Garden: {'MODEL_GARDEN_URL' if settings.model_garden_url else 'embedded simulator'}"
          f" | GatewayDB: {'GATEWAY_DB_URL' if settings.gateway_db_url else 'embedded PostgreSQL'}"
          f" | Redis: {'REDIS_URL' if settings.redis_url else 'embedded redis-server'}")
    print(f"  state under {garden_home()}\n")
    sim = None
    if not settings.model_garden_url:
        from garden_pipeline.simulator import SimulatorServer

        # Started here (not inside the job) so the demo can change Model Garden and push the changes.
        sim = SimulatorServer(scale=settings.simulator_scale).start()
        os.environ["MODEL_GARDEN_URL"] = sim.url
    try:
        args.mode, args.dry_run, args.updated_since, args.allow_large_delete, args.only = (
            "full", False, None, False, None)
        code = run_sync(args)
        if code == 0 and sim is not None:
            code = _demo_events(sim)
    finally:
        if sim is not None:
            sim.stop()
            os.environ.pop("MODEL_GARDEN_URL", None)
    if code == 0 and not settings.gateway_db_url:
        print(f"\nGatewayDB (embedded PostgreSQL 16) keeps its data in {garden_home() / 'pgdata'};")
        print(f"  schema {settings.gateway_db_schema!r} holds the gateway's tables, "
              f"{settings.gateway_db_schema + '_sync'!r} the pipeline's bookkeeping.")
    if code == 0:
        print("\nNext: `garden-pipeline dev` opens the Dagster UI on this same stack (http://127.0.0.1:3000),")
        print("      with the events receiver and a simulator pushing live changes;")
        print("      `garden-pipeline sync --mode incremental` pulls only what changed.")
    return code


def _demo_events(sim) -> int:
    from garden_pipeline.settings import env
    from garden_pipeline.simulator import EventPusher

    receiver = _start_receiver(0)
    try:
        events = sim.state.mutate(10, rng_seed=1)
        secret = (env("GARDEN_EVENTS_SECRET") or "").split(",")[0].strip() or None
        acked = sum(r.status_code == 200 for r in EventPusher(
            f"{receiver.url}/api/v1/model-garden/events", secret=secret).push(events))
        print(f"\nreal-time path: Model Garden pushed {len(events)} events; the receiver acknowledged {acked}")
    finally:
        receiver.stop()
    args = argparse.Namespace()
    return cmd_events_apply(args)


def cmd_sync(args) -> int:
    return run_sync(args)


def _start_receiver(port: int):
    from garden_pipeline.events.receiver import receiver_from_env
    from garden_pipeline.serving import BackgroundServer

    return BackgroundServer(receiver_from_env(), port=port, name="events receiver").start()


def cmd_dev(args) -> int:
    """Dagster UI + daemon, the events receiver and (embedded) a live simulator pushing changes."""
    import subprocess

    from garden_pipeline.settings import env

    home = _dagster_home()
    settings = Settings.from_env()
    if not settings.gateway_db_url:
        # Held open by this process for as long as the UI runs.
        from garden_pipeline.embedded.postgres import embedded_postgres_url

        embedded_postgres_url(garden_home() / "pgdata")
    receiver = _start_receiver(args.events_port)
    events_url = f"{receiver.url}/api/v1/model-garden/events"
    print(f"events receiver: {events_url} (docs: {receiver.url}/docs)")
    pusher = sim = None
    child_env = dict(os.environ)
    if not settings.model_garden_url:
        from garden_pipeline.simulator import EventPusher, PeriodicPusher, SimulatorServer

        sim = SimulatorServer(scale=settings.simulator_scale).start()
        child_env["MODEL_GARDEN_URL"] = sim.url
        secret = (env("GARDEN_EVENTS_SECRET") or "").split(",")[0].strip() or None
        if args.push_interval > 0:
            pusher = PeriodicPusher(sim.state, EventPusher(events_url, secret=secret), interval=args.push_interval,
                                    changes=5)
            pusher.start()
        print(f"Model Garden simulator: {sim.url} (pushing 5 changes every {args.push_interval}s)")
    bindir = Path(sys.executable).parent
    dagster = str(bindir / "dagster") if (bindir / "dagster").exists() else "dagster"
    cmd = [dagster, "dev", "-m", "garden_pipeline", "-h", args.host, "-p", str(args.port)]
    print(f"DAGSTER_HOME={home}; Dagster UI on http://{args.host}:{args.port}")
    try:
        return subprocess.call(cmd, env=child_env)
    except KeyboardInterrupt:
        return 0
    finally:
        if pusher:
            pusher.stop()
        if sim:
            sim.stop()
        receiver.stop()


def cmd_db_upgrade(args) -> int:
    resources = _resources()
    db = resources["gateway_db"]
    from garden_pipeline.gatewaydb import migrate

    migrate.upgrade(db.url(), db.db_schema, args.revision)
    print(f"GatewayDB schema {db.db_schema!r} is at revision {migrate.current(db.url(), db.db_schema)}")
    return 0


def cmd_relay(args) -> int:
    from garden_pipeline.publish.relay import relay_pending

    r = _resources()
    db, stream = r["gateway_db"], r["completion_stream"]
    with db.connect() as conn:
        result = relay_pending(conn, db.db_schema, stream.client(), stream.stream, stream.dedupe_ttl_seconds)
    print(json.dumps({"published": result.published, "already_on_stream": result.already_on_stream,
                      "failed": result.failed}, indent=2))
    return 0 if not result.failed else 1


def cmd_serve_events(args) -> int:
    import uvicorn

    from garden_pipeline.events.receiver import receiver_from_env

    uvicorn.run(receiver_from_env(), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def _db():
    db = _resources()["gateway_db"]
    return db, db.connect()


def cmd_events_list(args) -> int:
    from psycopg import sql

    from garden_pipeline.gatewaydb.sql import sync_table

    db, conn = _db()
    with conn:
        rows = conn.execute(
            sql.SQL("SELECT id, entity_type, entity_id, event_type, event_ts, received_at, state_reason FROM {} "
                    "WHERE state = %s ORDER BY id LIMIT %s").format(sync_table(db.db_schema, "inbox")),
            (args.state, args.limit),
        ).fetchall()
    if not rows:
        print(f"no {args.state} events")
    for r in rows:
        print(f"{r[0]:>8}  {r[1]}:{r[2]}  {r[3]:<8} at {r[4].isoformat()}  received {r[5]:%Y-%m-%d %H:%M:%S}  {r[6] or ''}")
    return 0


def cmd_events_replay(args) -> int:
    from garden_pipeline.defs.events.jobs import replay_dead_letters_sql

    db, conn = _db()
    with conn:
        n = replay_dead_letters_sql(conn, db.db_schema, args.ids or [], args.all)
    print(f"{n} dead-lettered events back to pending; `garden-pipeline events apply` (or the inbox sensor) applies them")
    return 0


def cmd_events_apply(args) -> int:
    result = execute_job("apply_events_job")
    for ev in result.all_events:
        if ev.event_type_value == "STEP_OUTPUT":
            md = {k: getattr(v, "value", v) for k, v in ev.event_specific_data.metadata.items()}
            print(", ".join(f"{k}: {md[k]}" for k in ("events", "applied", "stale", "duplicate", "parked",
                                                      "dead_lettered")))
    return 0 if result.success else 1


def cmd_events_purge(args) -> int:
    from garden_pipeline.defs.events.jobs import purge_inbox_sql

    db, conn = _db()
    with conn:
        n = purge_inbox_sql(conn, db.db_schema, args.older_than_days)
    print(f"purged {n} settled events older than {args.older_than_days} days")
    return 0


def cmd_status(args) -> int:
    """Per entity: live rows, tombstones, last sync, watermark, drift; then the inbox."""
    from psycopg import sql

    from garden_pipeline.catalogue import CATALOGUE
    from garden_pipeline.checks import gateway_findings as gf
    from garden_pipeline.checks.thresholds import Thresholds
    from garden_pipeline.gatewaydb.sql import entity_table, sync_table

    thresholds = Thresholds.from_env()
    db, conn = _db()
    schema = db.db_schema
    with conn:
        state = {r[0]: r[1:] for r in conn.execute(sql.SQL(
            "SELECT entity, last_success_at, watermark, last_mode FROM {}").format(
                sync_table(schema, "sync_state"))).fetchall()}
        header = (f"{'entity':<20}{'live':>9}{'tombstoned':>11}  {'last successful sync':<22}{'mode':<12}"
                  f"{'watermark':<22}{'drift':>7}  checks")
        print(header)
        print("-" * len(header))
        for e in CATALOGUE:
            live, dead = conn.execute(sql.SQL(
                "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) "
                "FROM {}").format(entity_table(schema, e))).fetchone()
            last, mark, mode = state.get(e.name, (None, None, None))
            drift = gf.content_drift(conn, schema, e.name, thresholds.drift_max_ids)
            problems = [f for f in (gf.freshness(conn, schema, e.name, thresholds.freshness_warn,
                                                 thresholds.freshness_error),
                                    gf.referential_integrity(conn, schema, e.name)) if not f.passed]
            note = "; ".join(f"{f.severity}: {f.summary}" for f in problems) or "ok"
            print(f"{e.plural:<20}{live:>9}{dead:>11}  {_ts(last):<22}{mode or '-':<12}{_ts(mark):<22}"
                  f"{drift.metadata.get('drifting', 0):>7}  {note}")
        print()
        for name, finding in gf.inbox_health(conn, schema, thresholds.backlog_warn, thresholds.backlog_error):
            status = "ok" if finding.passed else finding.severity
            print(f"{name:<16}{status:<7}{finding.summary}")
    return 0


def _ts(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def cmd_repair(args) -> int:
    config = {"entities": args.entity or [], "ids": args.id or [], "allow_large_delete": args.allow_large_delete}
    result = execute_job("repair_drift_job", {"ops": {"repair_drift": {"config": config}}})
    for ev in result.all_events:
        if ev.event_type_value == "STEP_OUTPUT":
            repaired = ev.event_specific_data.metadata["repaired"].value
            for entity, r in repaired.items():
                print(f"{entity:<20} drifting {r['drifting']:>6}  rewritten {r['rewritten']:>6}  "
                      f"tombstoned {r['tombstoned']:>6}  {', '.join(r['ids'][:5])}")
        elif ev.is_step_failure and ev.step_failure_data.error:
            print(f"repair failed: {ev.step_failure_data.error.message.strip()}", file=sys.stderr)
    return 0 if result.success else 1


def cmd_simulate(args) -> int:
    from garden_pipeline.simulator import run_simulator

    from garden_pipeline.settings import env

    secret = (env("GARDEN_EVENTS_SECRET") or "").split(",")[0].strip() or None
    run_simulator(host=args.host, port=args.port, scale=args.scale, seed=args.seed, token=args.token,
                  push_url=args.push_url, push_secret=secret if args.push_url else None,
                  push_interval=args.push_interval if args.push_url else None, cache_extract=args.cache_extract)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="garden-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("demo", help="start the embedded stack and simulator, run a full sync, print a summary") \
        .set_defaults(func=cmd_demo)

    s = sub.add_parser("sync", help="run full_sync_job or incremental_sync_job in this process")
    s.add_argument("--mode", choices=["full", "incremental"], default="full")
    s.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    s.add_argument("--updated-since", help="RFC 3339; re-pull changes since then (incremental mode)")
    s.add_argument("--allow-large-delete", action="store_true", help="let the full sync pass the delete guard")
    s.add_argument("--only", help="comma-separated entity names, e.g. model,llm_model_pricing")
    s.set_defaults(func=cmd_sync)

    d = sub.add_parser("dev", help="Dagster UI and daemon on the configured (or embedded) stack")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=3000)
    d.add_argument("--events-port", type=int, default=8000, help="port of the events receiver")
    d.add_argument("--push-interval", type=float, default=10.0,
                   help="embedded only: seconds between simulated Model Garden changes pushed as events (0: off)")
    d.set_defaults(func=cmd_dev)

    db = sub.add_parser("db", help="GatewayDB schema commands")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply Alembic migrations")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)

    sub.add_parser("relay", help="publish pending sync.completed events to Redis").set_defaults(func=cmd_relay)

    se = sub.add_parser("serve-events", help="run the events receiver (POST /api/v1/model-garden/events)")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--log-level", default="info")
    se.set_defaults(func=cmd_serve_events)

    ev = sub.add_parser("events", help="inspect and operate the event inbox")
    evsub = ev.add_subparsers(dest="events_command", required=True)
    ls = evsub.add_parser("list", help="list inbox events in a state (default: dead_lettered)")
    ls.add_argument("--state", default="dead_lettered",
                    choices=["pending", "parked", "dead_lettered", "applied", "stale", "duplicate"])
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_events_list)
    rp = evsub.add_parser("replay", help="put dead-lettered events back to pending")
    rp.add_argument("ids", nargs="*", type=int, help="inbox ids (see `events list`)")
    rp.add_argument("--all", action="store_true", help="every dead-lettered event")
    rp.set_defaults(func=cmd_events_replay)
    evsub.add_parser("apply", help="run apply_events_job now: apply everything pending") \
        .set_defaults(func=cmd_events_apply)
    pg = evsub.add_parser("purge", help="delete settled events older than N days")
    pg.add_argument("--older-than-days", type=int, default=7)
    pg.set_defaults(func=cmd_events_purge)

    sub.add_parser("status", help="per entity: rows, tombstones, last sync, watermark, drift; inbox health") \
        .set_defaults(func=cmd_status)
    rep = sub.add_parser("repair", help="re-apply only the rows that drift from a fresh full extract")
    rep.add_argument("--entity", action="append", help="entity name (repeatable); default: all")
    rep.add_argument("--id", action="append", help="only this id (repeatable)")
    rep.add_argument("--allow-large-delete", action="store_true")
    rep.set_defaults(func=cmd_repair)

    sim = sub.add_parser("simulate", help="run the Model Garden simulator standalone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--scale", type=int, default=2000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--token", default=os.environ.get("MODEL_GARDEN_TOKEN"))
    sim.add_argument("--push-url", help="also push random changes as signed events to this receiver URL")
    sim.add_argument("--push-interval", type=float, default=10.0, help="seconds between pushes")
    sim.add_argument("--cache-extract", action="store_true",
                     help="serve the full extract from a rendering kept while nothing changes (benchmarks)")
    sim.set_defaults(func=cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, KeyError) as exc:
        print(f"garden-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
