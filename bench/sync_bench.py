"""Full-sync benchmark, side by side in one run: COPY limit, garden_pipeline, dlt, per-row ORM.

    GATEWAY_DB_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/sync_bench.py --sizes 10000 100000 1000000

Each method runs in its own process (peak RSS from wait4), against the same seeded Model Garden served by
the simulator in another process (--cache-extract: the extract is rendered before the clock starts, so
the measurement starts at "extract available", not at the simulator generating rows); methods are interleaved, repeated, and reported as median and min-max,
with the WAL bytes PostgreSQL wrote. Needs the bench extra for dlt: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkpoint, drop_schema, fresh_schema, machine, median, pg_url, write  # noqa: E402

from garden_pipeline.serving import free_port  # noqa: E402
from garden_pipeline.gatewaydb.connection import libpq_url  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
WORK = HERE / ".work"


def _wal(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


def run_method(method: str, url: str, schema: str, **extra) -> dict:
    args = [sys.executable, str(HERE / "methods.py"), method, "--pg", url, "--schema", schema]
    for k, v in extra.items():
        args += [f"--{k}", str(v)]
    checkpointed = checkpoint(url)
    wal_before = _wal(url)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"{method} failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: kilobytes
    result["wal_mb"] = round((_wal(url) - wal_before) / 2**20, 2)
    result["checkpointed_before"] = checkpointed
    return result


class Simulator:
    def __init__(self, scale: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(BIN / "garden-pipeline"), "simulate", "--port", str(self.port), "--scale",
                                      str(scale), "--seed", "42", "--cache-extract"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/_sim/stats", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("simulator did not start")

    def download(self, path: Path) -> int:
        with httpx.stream("GET", self.url + "/model-garden/sync/all", timeout=600) as r, open(path, "wb") as f:
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
        return path.stat().st_size

    def update(self, n: int, seed: int) -> None:
        """``n`` rows updated in Model Garden."""
        httpx.post(self.url + "/_sim/mutate", json={"n": n, "seed": seed, "kinds": ["UPDATED"]},
                   timeout=600).raise_for_status()

    def change(self, rows: int, seed: int) -> None:
        """5 % of rows updated, about 1 % deleted (limits dropped from the extract)."""
        self.update(int(rows * 0.05), seed)
        counts = httpx.get(self.url + "/_sim/stats").json()["counts"]
        fraction = min(0.5, rows * 0.01 / max(1, counts.get("llm_model_limit", 1)))
        # Twice: once for the warm-up download that renders it, once for the measured sync.
        httpx.post(self.url + "/_sim/faults", json={"drop_fraction": {"entity": "llm_model_limit",
                                                                      "fraction": fraction}, "times": 2})

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def bench_size(url: str, redis: str, size: int, reps: int, dlt_reps: int, orm_limit: int) -> dict:
    WORK.mkdir(exist_ok=True)
    sim = Simulator(size)
    extract = WORK / f"extract-{size}.json"
    out: dict = {"rows": size, "runs": {}}
    try:
        out["extract_mb"] = round(sim.download(extract) / 2**20, 1)
        runs = out["runs"]
        for rep in range(reps):
            for name in ("copy_limit", "garden_empty"):
                schema = fresh_schema()
                try:
                    if name == "copy_limit":
                        runs.setdefault(name, []).append(run_method("copy_limit", url, schema, extract=extract))
                    else:
                        # The simulator's cached rendering is keyed by state and active faults; the previous
                        # repetition's changes made it stale, and rendering 1M rows inside the timed empty
                        # sync once doubled it (20 s -> 41 s). Render first: "extract available".
                        sim.download(extract)
                        runs.setdefault("garden_empty", []).append(run_method("garden", url, schema, mg=sim.url,
                                                                              redis=redis))
                        runs.setdefault("garden_nochange", []).append(run_method("garden", url, schema, mg=sim.url,
                                                                                 redis=redis))
                        sim.change(size, seed=rep)
                        sim.download(extract)  # "extract available": rendered before the clock starts
                        runs.setdefault("garden_changed", []).append(run_method("garden", url, schema, mg=sim.url,
                                                                                redis=redis))
                finally:
                    drop_schema(url, schema)
            if rep < dlt_reps:
                # The peer in the same repetition, on the extract just synced: its ratios are of medians
                # taken in the same stretch of the machine's weather, not one run against three.
                schema = fresh_schema()
                try:
                    runs.setdefault("dlt_first", []).append(run_method("dlt_merge", url, schema, extract=extract))
                    runs.setdefault("dlt_identical", []).append(run_method("dlt_merge", url, schema,
                                                                           extract=extract))
                finally:
                    drop_schema(url, schema)
        sim.download(extract)  # the state after the changes, for the ORM baseline
        if orm_limit:
            schema = fresh_schema()
            try:
                orm = run_method("orm_baseline", url, schema, extract=extract, limit=min(orm_limit, size))
                orm["extrapolated_seconds"] = round(orm["seconds"] * size / orm["rows"], 1)
                runs["orm_baseline"] = [orm]
            finally:
                drop_schema(url, schema)
    finally:
        sim.stop()
        extract.unlink(missing_ok=True)
    out["summary"] = {name: {"median_s": round(median([r["seconds"] for r in rs]), 2),
                             "min_s": round(min(r["seconds"] for r in rs), 2),
                             "max_s": round(max(r["seconds"] for r in rs), 2),
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                             "wal_mb": round(median([r["wal_mb"] for r in rs]), 1)}
                      for name, rs in out["runs"].items()}
    return out


def table(results: list[dict]) -> str:
    lines = ["| rows | method | median s (min–max) | ratio to COPY limit | peak RSS MB | WAL MB | written |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for res in results:
        limit = res["summary"]["copy_limit"]["median_s"]
        for name, s in res["summary"].items():
            run = res["runs"][name][0]
            written = ""
            if name.startswith("garden"):
                written = (f"ins {run['inserted']}, upd {run['updated']}, del {run['deleted']}; Dagster overhead "
                           f"{run['dagster_overhead_seconds']:.1f} s")
            if name == "orm_baseline":
                written = f"{run['rows']} rows measured, {run['extrapolated_seconds']} s extrapolated to all"
            lines.append(f"| {res['rows']:,} | {name} | {s['median_s']} ({s['min_s']}–{s['max_s']}) | "
                         f"{s['median_s'] / limit:.2f}× | {s['peak_rss_mb']} | {s['wal_mb']} | {written} |")
    return "\n".join(lines)


def targets(results: list[dict]) -> str:
    """The issue's targets as ratios measured in the same run, per size, each with its verdict."""
    lines = ["| rows | measure | measured | target | met |", "|---:|---|---:|---:|---|"]
    for res in results:
        m = {name: s["median_s"] for name, s in res["summary"].items()}
        empty = m["garden_empty"]
        rows = [("empty sync / COPY limit", empty / m["copy_limit"], "≤ 2.00×", lambda r: r <= 2),
                ("no-change sync / empty sync", m["garden_nochange"] / empty, "≤ 0.50×", lambda r: r <= 0.5),
                ("5 %/1 % changed / empty sync", m["garden_changed"] / empty, "≤ 0.60×", lambda r: r <= 0.6)]
        if "dlt_first" in m:
            rows += [("dlt first load / empty sync", m["dlt_first"] / m["garden_empty"], "≥ 10×", lambda r: r >= 10),
                     ("dlt identical reload / no-change sync", m["dlt_identical"] / m["garden_nochange"], "≥ 25×",
                      lambda r: r >= 25)]
        for label, ratio, goal, ok in rows:
            lines.append(f"| {res['rows']:,} | {label} | {ratio:.2f}× | {goal} | {'yes' if ok(ratio) else '**no**'} |")
        rss = max(s["peak_rss_mb"] for name, s in res["summary"].items() if name.startswith("garden"))
        lines.append(f"| {res['rows']:,} | peak RSS of the sync process | {rss} MB | ≤ 300 MB | "
                     f"{'yes' if rss <= 300 else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reps-1m", type=int, default=1, help="repetitions at 1M rows and above (each ~1 min)")
    ap.add_argument("--no-dlt", action="store_true")
    ap.add_argument("--dlt-reps", type=int, help="repetitions of dlt (first load and reload, ~80 s each at 1M); "
                    "default: as many as the other methods")
    ap.add_argument("--orm-limit", type=int, default=20_000)
    ap.add_argument("--name", default="sync", help="results file: results/<name>-<date>.md and .json")
    args = ap.parse_args()
    url = pg_url()
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    facts = machine(url)
    results = []
    for n in args.sizes:
        reps = args.reps if n < 1_000_000 else args.reps_1m
        dlt_reps = 0 if args.no_dlt else min(reps, args.dlt_reps if args.dlt_reps is not None else reps)
        results.append(bench_size(url, redis, n, reps, dlt_reps, args.orm_limit))
    flushed = all(r.get("checkpointed_before") for res in results for rs in res["runs"].values() for r in rs)
    md = (("Each method started after a CHECKPOINT.\n\n" if flushed else
           "**Not every method started after a CHECKPOINT** (no privilege): timings carry the previous one's "
           "writes.\n\n") + table(results) + "\n\nTargets, as ratios of medians in this run:\n\n" + targets(results))
    path = write(args.name, facts, {"sizes": results}, md)
    print(md)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
