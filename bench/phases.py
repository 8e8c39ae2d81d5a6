"""Where a full sync spends its time, phase by phase, without Dagster: landing, then each entity's apply.

    GATEWAY_DB_URL=... .venv/bin/python bench/phases.py EXTRACT_FILE [--explain MS] [--repeat] [--then EXTRACT]
        [--checkpoint]

Reads the extract from a file (so the source's speed is out of the picture), lands it, applies every
entity in catalogue order and prints seconds per phase. --repeat runs the same extract again (no-change);
--explain MS prints EXPLAIN (ANALYZE, BUFFERS) of every statement slower than MS (auto_explain).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkpoint, drop_schema, fresh_schema, pg_url  # noqa: E402

from garden_pipeline.catalogue import CATALOGUE  # noqa: E402
from garden_pipeline.gatewaydb import migrate  # noqa: E402
from garden_pipeline.gatewaydb.apply import DeletePolicy, apply_landed  # noqa: E402
from garden_pipeline.gatewaydb.connection import connect  # noqa: E402
from garden_pipeline.gatewaydb.staging import LandedExtract, find_landed, land_extract  # noqa: E402


def chunks(path: Path, size: int = 1 << 16):
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def explain(conn: psycopg.Connection, min_ms: int) -> None:
    """auto_explain, reported back to this client as notices: the real plans of the real statements."""
    conn.execute("LOAD 'auto_explain'")
    for k, v in {"log_min_duration": min_ms, "log_analyze": "on", "log_buffers": "on", "log_timing": "on",
                 "log_nested_statements": "on", "log_level": "notice"}.items():
        conn.execute(f"SET auto_explain.{k} = '{v}'")
    conn.add_notice_handler(lambda d: print(d.message_primary, file=sys.stderr))


def one_pass(url: str, schema: str, path: Path, label: str, explain_ms: int | None = None,
             flush: bool = False) -> tuple[LandedExtract, float, float]:
    """Land ``path`` and apply every entity, printing each phase; returns what landed and the seconds of
    the landing and of the applies."""
    run_id = f"{label}-{time.time_ns()}"
    if flush:
        checkpoint(url)  # as sync_bench.py does before each method
    with connect(url, autocommit=True) as conn:  # as the pipeline connects (jit off, autocommit)
        if explain_ms is not None:
            explain(conn, explain_ms)
        t0 = time.perf_counter()
        landed = land_extract(conn, schema, run_id, chunks(path), [e.name for e in CATALOGUE], "full")
        t1 = time.perf_counter()
        print(f"[{label}] land {t1 - t0:.2f} s ({sum(le.rows for le in landed.entities.values())} rows)")
        total = 0.0
        for e in CATALOGUE:
            ref = find_landed(conn, schema, e.name, run_id)
            s = time.perf_counter()
            c = apply_landed(conn, schema, ref, run_id, DeletePolicy(allow_large_delete=True))
            d = time.perf_counter() - s
            total += d
            print(f"[{label}]   apply {e.name:18s} {d:6.2f} s ins {c.inserted} upd {c.updated} del {c.deleted} compared {c.compared}")
        print(f"[{label}] apply total {total:.2f} s; all {time.perf_counter() - t0:.2f} s; "
              f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return landed, t1 - t0, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("extract", type=Path)
    ap.add_argument("--repeat", action="store_true")
    ap.add_argument("--then", type=Path, metavar="EXTRACT", help="after the first sync, sync this extract (a change)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--explain", type=int, metavar="MS", help="print plans of statements slower than MS")
    ap.add_argument("--checkpoint", action="store_true", help="CHECKPOINT before each pass, as sync_bench.py")
    args = ap.parse_args()
    url = pg_url()
    schema = fresh_schema()
    migrate.upgrade(url, schema)
    try:
        one_pass(url, schema, args.extract, "empty", args.explain, args.checkpoint)
        if args.repeat:
            one_pass(url, schema, args.extract, "nochange", args.explain, args.checkpoint)
        if args.then:
            one_pass(url, schema, args.then, "then", args.explain, args.checkpoint)
    finally:
        if not args.keep:
            drop_schema(url, schema)
        else:
            print("schema", schema)


if __name__ == "__main__":
    main()
