"""Real-time path benchmark: receiver throughput, batch apply rate, POST-to-visible latency under the daemon.

    GATEWAY_DB_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/events_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Timer, drop_schema, fresh_schema, machine, median, pct, pg_url, write  # noqa: E402

from garden_pipeline.catalogue import CATALOGUE  # noqa: E402
from garden_pipeline.cli import EMBEDDED_INSTANCE_YAML  # noqa: E402
from garden_pipeline.events import inbox  # noqa: E402
from garden_pipeline.events.envelope import validate_event  # noqa: E402
from garden_pipeline.gatewaydb import migrate  # noqa: E402
from garden_pipeline.gatewaydb.apply import apply_landed  # noqa: E402
from garden_pipeline.gatewaydb.apply_events import apply_inbox_batch  # noqa: E402
from garden_pipeline.serving import free_port, wait_until_ok  # noqa: E402
from garden_pipeline.gatewaydb.connection import connect, libpq_url  # noqa: E402
from garden_pipeline.gatewaydb.staging import find_landed, land_extract  # noqa: E402
from garden_pipeline.simulator import ModelGardenState, SimulatorServer  # noqa: E402

BIN = Path(sys.executable).parent
EVENTS = "/api/v1/model-garden/events"


def _project_event(pid: str, ts: str = "2025-07-15T14:00:00Z") -> dict:
    return {"event_id": f"e-{pid}", "event_type": "CREATED", "entity_type": "project", "entity_id": pid,
            "timestamp": ts, "version": "1.0",
            "payload": {"id": pid, "project_name": "Bench", "project_code": "BENCH", "created_time": ts,
                        "updated_time": ts}}


async def _post_all(host: str, port: int, path: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """POST every body over ``concurrency`` keep-alive connections; latencies of the 200s.

    A minimal HTTP/1.1 client on asyncio streams, so the load generator spends microseconds per
    request: with httpx in threads it took a whole core of the two and capped what it measured.
    """
    queue = iter(bodies)
    latencies: list[float] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n")
        try:
            for body in queue:
                started = time.perf_counter()
                writer.write((head % len(body)).encode() + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if status == 200:
                    latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies


def receiver_throughput(url: str, single: int, batches: int, batch_size: int, concurrency: int) -> dict:
    schema = fresh_schema()
    port = free_port()
    env = {**os.environ, "GATEWAY_DB_URL": url, "GATEWAY_DB_SCHEMA": schema}
    env.pop("GARDEN_EVENTS_SECRET", None)
    proc = subprocess.Popen([str(BIN / "garden-pipeline"), "serve-events", "--port", str(port), "--log-level",
                             "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(base + "/api/v1/model-garden/health")
        lock = threading.Lock()
        bodies = [json.dumps(_project_event(f"s{i}")).encode() for i in range(single)]
        with Timer() as t_single:
            latencies = asyncio.run(_post_all("127.0.0.1", port, EVENTS, bodies, concurrency))
        batch_lat: list[float] = []
        bcounter = iter(range(batches))

        def batch_worker() -> None:
            with httpx.Client(timeout=60) as client:
                for b in bcounter:
                    body = json.dumps([_project_event(f"b{b}-{i}") for i in range(batch_size)]).encode()
                    t0 = time.perf_counter()
                    r = client.post(base + EVENTS + "/batch", content=body,
                                    headers={"Content-Type": "application/json"})
                    if r.status_code == 200:
                        with lock:
                            batch_lat.append(time.perf_counter() - t0)

        bthreads = [threading.Thread(target=batch_worker) for _ in range(min(concurrency, 4))]
        with Timer() as t_batch:
            for th in bthreads:
                th.start()
            for th in bthreads:
                th.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        drop_schema(url, schema)
    return {
        "single_acked": len(latencies), "single_seconds": round(t_single.seconds, 2),
        "single_acks_per_s": round(len(latencies) / t_single.seconds, 1),
        "single_p50_ms": round(median(latencies) * 1000, 1), "single_p99_ms": round(pct(latencies, 99) * 1000, 1),
        "batch_events_acked": len(batch_lat) * batch_size, "batch_size": batch_size,
        "batch_events_per_s": round(len(batch_lat) * batch_size / t_batch.seconds, 1),
        "batch_p50_ms": round(median(batch_lat) * 1000, 1), "batch_p99_ms": round(pct(batch_lat, 99) * 1000, 1),
        "concurrency": concurrency,
    }


def apply_rate(url: str, n_events: int, scale: int) -> dict:
    """Apply a mixed batch (creates, updates, deletes over a synced base state) in one apply run."""
    schema = fresh_schema()
    migrate.upgrade(url, schema)
    state = ModelGardenState(scale=scale, seed=11)
    try:
        with SimulatorServer(state=state) as sim, connect(url, autocommit=True) as conn:
            with httpx.stream("GET", sim.url + "/model-garden/sync/all", timeout=120) as resp:
                land_extract(conn, schema, "base", resp.iter_bytes(), [e.name for e in CATALOGUE], mode="full")
            for e in CATALOGUE:
                apply_landed(conn, schema, find_landed(conn, schema, e.name, "base"), "base")
        # Realistic traffic: mostly edits, some creations, few deletions (a deletion cascades to children).
        events = (state.mutate(int(n_events * 0.7), rng_seed=3, kinds=("UPDATED",))
                  + state.mutate(int(n_events * 0.25), rng_seed=4, kinds=("CREATED",))
                  + state.mutate(max(1, int(n_events * 0.01)), rng_seed=5, kinds=("DELETED",)))
        kinds: dict[str, int] = {}
        for e in events:
            kinds[e["event_type"]] = kinds.get(e["event_type"], 0) + 1
        with connect(url, autocommit=True) as conn:
            inbox.store(conn, schema, [validate_event(e) for e in events])
            with Timer() as t:
                result = apply_inbox_batch(conn, schema, "bench")
    finally:
        drop_schema(url, schema)
    return {"events": result.events, "base_rows": scale, "kinds": kinds, "seconds": round(t.seconds, 2),
            "events_per_s": round(result.events / t.seconds, 1), "states": dict(result.states)}


def end_to_end(url: str, n: int, rate: float) -> dict:
    """POST → row visible in GatewayDB under `dagster dev` (webserver + daemon) and the inbox sensor."""
    schema = fresh_schema()
    migrate.upgrade(url, schema)
    home = Path(tempfile.mkdtemp(prefix="bench-dagster-"))
    (home / "dagster.yaml").write_text(EMBEDDED_INSTANCE_YAML)  # what `garden-pipeline dev` uses
    env = {**os.environ, "GATEWAY_DB_URL": url, "GATEWAY_DB_SCHEMA": schema, "DAGSTER_HOME": str(home),
           "GARDEN_FULL_SYNC_CRON": "0 0 1 1 *", "GARDEN_INCREMENTAL_SYNC_CRON": "0 0 1 1 *",
           }
    env.pop("GARDEN_EVENTS_SECRET", None)
    port, ui = free_port(), free_port()
    procs = [
        subprocess.Popen([str(BIN / "garden-pipeline"), "serve-events", "--port", str(port), "--log-level",
                          "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(BIN / "dagster"), "dev", "-m", "garden_pipeline", "-p", str(ui)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
    ]
    base = f"http://127.0.0.1:{port}"
    seen: dict[str, float] = {}
    posted: dict[str, float] = {}
    try:
        wait_until_ok(base + "/api/v1/model-garden/health")
        wait_until_ok(f"http://127.0.0.1:{ui}/server_info", 120)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn, httpx.Client(timeout=10) as client:
            # Warm-up: wait until the daemon has applied one event.
            client.post(base + EVENTS, json=_project_event("warmup"))
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not conn.execute(
                    f"SELECT 1 FROM \"{schema}\".projects WHERE id = 'warmup'").fetchone():
                time.sleep(0.5)
            stop = threading.Event()

            def poll() -> None:
                with psycopg.connect(libpq_url(url), autocommit=True) as pconn:
                    while not stop.is_set():
                        now = time.perf_counter()
                        for (pid,) in pconn.execute(f'SELECT id FROM "{schema}".projects').fetchall():
                            seen.setdefault(pid, now)
                        time.sleep(0.05)

            poller = threading.Thread(target=poll)
            poller.start()
            for i in range(n):
                pid = f"e2e-{i}"
                posted[pid] = time.perf_counter()
                client.post(base + EVENTS, json=_project_event(pid))
                time.sleep(1 / rate)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(p in seen for p in posted):
                time.sleep(0.2)
            stop.set()
            poller.join()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM) if p.args[1] == "dev" else p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_schema(url, schema)
    lat = [seen[p] - posted[p] for p in posted if p in seen]
    return {"events": n, "visible": len(lat), "rate_per_s": rate,
            "p50_s": round(median(lat), 2), "p95_s": round(pct(lat, 95), 2), "max_s": round(max(lat), 2) if lat else None,
            "sensor_interval_s": int(os.environ.get("GARDEN_INBOX_SENSOR_INTERVAL", "2")), "run_launcher": "default (process per run)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    url = pg_url()
    facts = machine(url)
    q = args.quick
    results = {"receiver": receiver_throughput(url, 300 if q else 4000, 4 if q else 40, 500, 16)}
    results["apply_10k"] = apply_rate(url, 1000 if q else 10_000, 2000 if q else 20_000)
    if not q:
        results["apply_100k"] = apply_rate(url, 100_000, 200_000)
    if not args.skip_e2e:
        results["end_to_end"] = end_to_end(url, 20 if q else 200, 5.0)
    r = results["receiver"]
    rows = [
        "| measure | result | target |",
        "|---|---:|---:|",
        f"| receiver, single events (concurrency {r['concurrency']}) | {r['single_acks_per_s']} acks/s, "
        f"p50 {r['single_p50_ms']} ms, p99 {r['single_p99_ms']} ms | ≥ 1,500 acks/s |",
        f"| receiver, batches of {r['batch_size']} | {r['batch_events_per_s']} events/s, p50 {r['batch_p50_ms']} ms, "
        f"p99 {r['batch_p99_ms']} ms | far more than single |",
    ]
    for key in ("apply_10k", "apply_100k"):
        if key in results:
            a = results[key]
            rows.append(f"| apply, {a['events']} mixed events over {a['base_rows']} rows | {a['events_per_s']} events/s "
                        f"({a['seconds']} s) | ≥ 20,000 events/s |")
    if "end_to_end" in results:
        e = results["end_to_end"]
        rows.append(f"| POST → visible in GatewayDB under the daemon ({e['visible']}/{e['events']} events at "
                    f"{e['rate_per_s']}/s) | p50 {e['p50_s']} s, p95 {e['p95_s']} s, max {e['max_s']} s | p95 < 10 s |")
    table = "\n".join(rows)
    path = write("events", facts, results, table)
    print(table)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
