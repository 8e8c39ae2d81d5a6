"""Shared bits of the benchmark scripts: machine facts, result files, percentiles."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from garden_pipeline.gatewaydb.connection import libpq_url

RESULTS = Path(__file__).resolve().parent / "results"


def pg_url() -> str:
    url = os.environ.get("GATEWAY_DB_URL")
    if url:
        return url
    from garden_pipeline.embedded.postgres import embedded_postgres_url

    return embedded_postgres_url(Path(__file__).resolve().parent / ".work" / "pgdata")


def machine(url: str) -> dict:
    with psycopg.connect(libpq_url(url)) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', "
            "'wal_level', 'max_wal_size', 'work_mem', 'fsync')").fetchall())
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "postgres": version,
        "postgres_settings": settings,
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }


def checkpoint(url: str) -> bool:
    """Flush what the previous method dirtied, so no method pays for the one before it.

    With shared_buffers at 128 MB and max_wal_size at 1 GB, a 1M-row method writes a quarter of the WAL that
    triggers a checkpoint: left alone, checkpoints land on whichever method comes next (seen: the same
    empty sync at 6.4 s and 7.9 s). Needs superuser or pg_checkpoint; without either, runs go on unflushed
    and the result says so.
    """
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def fresh_schema() -> str:
    return f"bench_{uuid.uuid4().hex[:8]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_sync" CASCADE')
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_staging" CASCADE')  # dlt's


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write(name: str, facts: dict, results: dict, table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    day = facts["date"][:10]
    (RESULTS / f"{name}-{day}.json").write_text(json.dumps({"machine": facts, "results": results}, indent=2))
    header = (f"Measured {facts['date']} on {facts['cpus']} CPUs ({facts['cpu']}), {facts['memory_gib']} GiB, "
              f"PostgreSQL {facts['postgres']}, Python {facts['python']}, commit {facts['git']}.\n\n")
    path = RESULTS / f"{name}-{day}.md"
    path.write_text(header + table + "\n")
    return path


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
