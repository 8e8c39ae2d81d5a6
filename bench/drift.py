"""Sync after sync with churn: does the carry-over hold its share, or do rows drift out of the window?

    GATEWAY_DB_URL=... .venv/bin/python bench/drift.py [--rows 1000000] [--rounds 10] [--churn 0.05] [--name drift]

One GatewayDB schema, one simulated Model Garden: an empty sync, a no-change sync, then ``--rounds`` syncs
each after ``--churn`` of the rows were updated. Each round is one ``phases.py`` pass (the extract read from a
file, landed, every entity applied, without Dagster); it reports seconds for the landing and the
applies, the share of rows carried over, and how many rows stand out of the extract's order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import drop_schema, fresh_schema, machine, pg_url, write  # noqa: E402
from phases import one_pass  # noqa: E402
from sync_bench import WORK, Simulator  # noqa: E402

from garden_pipeline.gatewaydb import migrate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--churn", type=float, default=0.05)
    ap.add_argument("--name", default="drift")
    args = ap.parse_args()
    url = pg_url()
    facts = machine(url)
    WORK.mkdir(exist_ok=True)
    extract = WORK / "drift.json"
    schema = fresh_schema()
    migrate.upgrade(url, schema)
    sim = Simulator(args.rows)
    results = []
    try:
        for n in range(args.rounds + 2):
            if n >= 2:
                sim.update(int(args.rows * args.churn), seed=100 + n)
            sim.download(extract)
            landed, landing, applying = one_pass(url, schema, extract, f"round {n}")
            les = landed.entities.values()
            results.append({"round": n, "kind": "empty" if n == 0 else "no change" if n == 1 else
                            f"{args.churn:.0%} changed", "land_s": round(landing, 2), "apply_s": round(applying, 2),
                            "rows": sum(le.rows for le in les), "carried": sum(le.carried for le in les),
                            "scattered": sum(le.scattered for le in les)})
            print(results[-1], flush=True)
    finally:
        sim.stop()
        drop_schema(url, schema)
        extract.unlink(missing_ok=True)
    lines = [f"{args.rows:,} rows; each round after the second, {args.churn:.0%} of them updated.", "",
             "| round | sync | landing s | apply s | carried | rows out of order after |",
             "|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['kind']} | {r['land_s']} | {r['apply_s']} | {r['carried'] / r['rows']:.1%} | "
              f"{r['scattered']:,} |" for r in results]
    md = "\n".join(lines)
    print(md)
    print(f"\nwritten to {write(args.name, facts, {'rounds': results}, md)}")


if __name__ == "__main__":
    main()
