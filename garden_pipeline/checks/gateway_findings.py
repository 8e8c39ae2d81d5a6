"""Findings about GatewayDB itself: content drift, referential integrity, freshness, business rules.

Content drift compares GatewayDB's live rows with the latest full extract by
hashes: first one sum per entity, then per bucket of ids, and only inside
buckets that differ row by row, so finding a handful of drifting ids does not
ship or join whole tables. Rows whose state is newer than that extract (an
event changed them since) are left out of the comparison on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity, by_name
from garden_pipeline.checks.finding import Finding
from garden_pipeline.gatewaydb.sql import entity_table, ident, sync_table
from garden_pipeline.gatewaydb.staging import REJECTED
from garden_pipeline.gatewaydb.tables import DELETED_COLUMN, VERSION_COLUMN, sync_schema

BUCKETS = 256


@dataclass
class Reference:
    batch_id: str
    stage_table: str
    generated_at: datetime


def latest_full_extract(conn: psycopg.Connection, schema: str, entity: str) -> Reference | None:
    """The newest full extract still staged, applied or not: materialising only the extract assets
    is how an operator checks for drift without writing anything."""
    row = conn.execute(
        sql.SQL("SELECT batch_id, stage_table, generated_at FROM {} WHERE entity = %s AND mode = 'full' "
                "AND NOT dry_run ORDER BY generated_at DESC LIMIT 1").format(
            sync_table(schema, "landed_extracts")),
        (entity,),
    ).fetchone()
    if not row:
        return None
    exists = conn.execute("SELECT to_regclass(%s)", (f'"{sync_schema(schema)}"."{row[1]}"',)).fetchone()[0]
    return Reference(*row) if exists else None


def _row_hash(entity: Entity, alias: str) -> sql.Composable:
    cols = sql.SQL(", ").join(sql.SQL("{}.{}").format(ident(alias), ident(n)) for n in entity.field_names)
    return sql.SQL("md5(ROW({})::text)").format(cols)


def _sides(schema: str, entity: Entity, ref: Reference) -> tuple[sql.Composable, sql.Composable]:
    """(extract side, GatewayDB side) as relations of (id, h) over the comparable ids."""
    t = entity_table(schema, entity)
    g = sync_table(schema, "tombstones")
    newer = sql.SQL(
        "(EXISTS (SELECT 1 FROM {t} n WHERE n.id = {a}.id AND n.{ver} > %(g)s) OR EXISTS (SELECT 1 FROM {g} x "
        "WHERE x.entity = %(e)s AND x.id = {a}.id AND x.deleted_at > %(g)s))"
    )
    ext = sql.SQL("(SELECT s.id, {h} AS h FROM {stage} s WHERE NOT s.{rej} AND NOT {newer})").format(
        h=_row_hash(entity, "s"), stage=ident(sync_schema(schema), ref.stage_table), rej=ident(REJECTED),
        newer=newer.format(t=t, ver=ident(VERSION_COLUMN), g=g, a=sql.Identifier("s")))
    db = sql.SQL("(SELECT d.id, {h} AS h FROM {t} d WHERE d.{dele} IS NULL AND d.{ver} <= %(g)s)").format(
        h=_row_hash(entity, "d"), t=t, dele=ident(DELETED_COLUMN), ver=ident(VERSION_COLUMN))
    return ext, db


def drifting_ids(conn: psycopg.Connection, schema: str, entity: Entity, ref: Reference,
                 limit: int | None = None) -> tuple[int, list[tuple[str, str]], dict]:
    """(how many ids drift, [(id, how)] up to ``limit``, stats): how = missing | unexpected | different."""
    ext, db = _sides(schema, entity, ref)
    params = {"g": ref.generated_at, "e": entity.name}
    agg = sql.SQL("SELECT (hashtext(id) & {m}) AS b, count(*), sum(('x' || substr(h, 1, 15))::bit(60)::bigint) "
                  "FROM {rel} r GROUP BY 1")
    mask = sql.Literal(BUCKETS - 1)
    left = dict((b, (n, s)) for b, n, s in conn.execute(agg.format(m=mask, rel=ext), params).fetchall())
    right = dict((b, (n, s)) for b, n, s in conn.execute(agg.format(m=mask, rel=db), params).fetchall())
    bad = sorted(b for b in set(left) | set(right) if left.get(b) != right.get(b))
    stats = {"buckets": BUCKETS, "drifting_buckets": len(bad), "extract_rows": sum(n for n, _ in left.values()),
             "gateway_rows": sum(n for n, _ in right.values())}
    if not bad:
        return 0, [], stats
    rows = conn.execute(
        sql.SQL(
            """
            SELECT coalesce(e.id, d.id) AS id,
                   CASE WHEN d.id IS NULL THEN 'missing' WHEN e.id IS NULL THEN 'unexpected' ELSE 'different' END
            FROM (SELECT * FROM {ext} x WHERE (hashtext(x.id) & {m}) = ANY(%(b)s)) e
            FULL JOIN (SELECT * FROM {db} y WHERE (hashtext(y.id) & {m}) = ANY(%(b)s)) d ON d.id = e.id
            WHERE e.h IS DISTINCT FROM d.h
            ORDER BY 1
            """
        ).format(ext=ext, db=db, m=mask),
        {**params, "b": bad},
    ).fetchall()
    return len(rows), (rows if limit is None else rows[:limit]), stats


def content_drift(conn: psycopg.Connection, schema: str, entity: str, max_ids: int = 20) -> Finding:
    e = by_name(entity)
    ref = latest_full_extract(conn, schema, entity)
    if ref is None:
        return Finding.ok("no full extract landed yet to compare with")
    total, sample, stats = drifting_ids(conn, schema, e, ref, max_ids)
    meta = {**stats, "compared_with_extract": ref.batch_id, "extract_generated_at": ref.generated_at.isoformat(),
            "drifting": total, "drifting_ids": [f"{i} ({how})" for i, how in sample]}
    if total:
        return Finding(False, "ERROR", f"{total} {e.plural} differ from the latest full extract", meta)
    return Finding.ok(f"live {e.plural} equal the latest full extract", **meta)


def referential_integrity(conn: psycopg.Connection, schema: str, entity: str, max_ids: int = 20) -> Finding:
    e = by_name(entity)
    broken: dict[str, list[str]] = {}
    total = 0
    for col, parent in e.parents.items():
        rows = conn.execute(
            sql.SQL("SELECT c.id FROM {c} c LEFT JOIN {p} p ON p.id = c.{col} WHERE c.{d} IS NULL "
                    "AND (p.id IS NULL OR p.{d} IS NOT NULL) ORDER BY c.id").format(
                c=entity_table(schema, e), p=entity_table(schema, by_name(parent)), col=ident(col),
                d=ident(DELETED_COLUMN))
        ).fetchall()
        total += len(rows)
        if rows:
            broken[col] = [r[0] for r in rows[:max_ids]]
    if total:
        return Finding(False, "ERROR", f"{total} live {e.plural} point at a missing or deleted parent",
                       {"broken": broken, "count": total})
    return Finding.ok("every live row's parents are live", count=0)


def freshness(conn: psycopg.Connection, schema: str, entity: str, warn_after: timedelta,
              error_after: timedelta) -> Finding:
    row = conn.execute(sql.SQL("SELECT last_success_at, watermark FROM {} WHERE entity = %s").format(
        sync_table(schema, "sync_state")), (entity,)).fetchone()
    if not row or row[0] is None:
        return Finding(False, "ERROR", f"{entity} has never synced successfully", {})
    age = datetime.now(timezone.utc) - row[0]
    meta = {"last_success_at": row[0].isoformat(), "watermark": row[1].isoformat() if row[1] else "",
            "age_s": round(age.total_seconds()), "warn_after_s": int(warn_after.total_seconds()),
            "error_after_s": int(error_after.total_seconds())}
    if age > error_after:
        return Finding(False, "ERROR", f"last successful sync {age} ago", meta)
    if age > warn_after:
        return Finding(False, "WARN", f"last successful sync {age} ago", meta)
    return Finding.ok(f"synced {int(age.total_seconds())} s ago", **meta)


def _rule_rows(conn, query: sql.Composable, params: dict | None = None) -> list[str]:
    return [r[0] for r in conn.execute(query, params or {}).fetchall()]


def business_rules(conn: psycopg.Connection, schema: str, entity: str, price_factor: float = 10.0,
                   max_ids: int = 20) -> Finding:
    """The contract's sanity rules that a valid row can still break (WARN, with ids)."""
    t = entity_table(schema, by_name(entity))
    found: dict[str, list[str]] = {}
    if entity == "llm_model_pricing":
        found["negative_price"] = _rule_rows(conn, sql.SQL(
            "SELECT id FROM {t} WHERE deleted_at IS NULL AND (input_price_per_1k_tokens < 0 "
            "OR output_price_per_1k_tokens < 0) ORDER BY id").format(t=t))
        found["price_jump"] = _rule_rows(conn, sql.SQL(
            """
            SELECT id FROM (
                SELECT id, input_price_per_1k_tokens AS p, output_price_per_1k_tokens AS o,
                       lag(input_price_per_1k_tokens) OVER w AS pp, lag(output_price_per_1k_tokens) OVER w AS po
                FROM {t} WHERE deleted_at IS NULL WINDOW w AS (PARTITION BY model_id ORDER BY effective_from)
            ) x
            WHERE (pp > 0 AND (p > pp * %(f)s OR p * %(f)s < pp)) OR (po > 0 AND (o > po * %(f)s OR o * %(f)s < po))
            ORDER BY id""").format(t=t), {"f": price_factor})
    elif entity == "use_case_budget":
        found["non_positive_budget"] = _rule_rows(conn, sql.SQL(
            "SELECT id FROM {t} WHERE deleted_at IS NULL AND budget_amount <= 0 ORDER BY id").format(t=t))
    elif entity == "llm_model_limit":
        found["zero_limit_on_active_subscription"] = _rule_rows(conn, sql.SQL(
            "SELECT l.id FROM {t} l JOIN {s} s ON s.id = l.subscription_id WHERE l.deleted_at IS NULL "
            "AND s.deleted_at IS NULL AND s.status = 'active' AND (l.requests_per_minute = 0 "
            "OR l.tokens_per_minute = 0 OR l.tokens_per_day = 0) ORDER BY l.id").format(
                t=t, s=entity_table(schema, by_name("subscription"))))
    bad = {rule: ids for rule, ids in found.items() if ids}
    meta = {rule: {"count": len(ids), "ids": ids[:max_ids]} for rule, ids in found.items()}
    if bad:
        return Finding(False, "WARN", "; ".join(f"{len(ids)} {rule.replace('_', ' ')}" for rule, ids in bad.items()),
                       meta)
    return Finding.ok("no rule broken", **meta)


RULED_ENTITIES = ("llm_model_pricing", "use_case_budget", "llm_model_limit")


def inbox_health(conn: psycopg.Connection, schema: str, backlog_warn: timedelta,
                 backlog_error: timedelta) -> list[tuple[str, Finding]]:
    row = conn.execute(sql.SQL(
        "SELECT count(*) FILTER (WHERE state = 'pending'), min(received_at) FILTER (WHERE state = 'pending'), "
        "count(*) FILTER (WHERE state = 'parked'), count(*) FILTER (WHERE state = 'dead_lettered') FROM {} "
        "WHERE state IN ('pending', 'parked', 'dead_lettered')").format(sync_table(schema, "inbox"))).fetchone()
    pending, oldest, parked, dead = row
    age = (datetime.now(timezone.utc) - oldest) if oldest else timedelta(0)
    meta = {"pending": pending, "oldest_pending_age_s": round(age.total_seconds())}
    if age > backlog_error:
        backlog = Finding(False, "ERROR", f"{pending} events pending, oldest {age} old", meta)
    elif age > backlog_warn:
        backlog = Finding(False, "WARN", f"{pending} events pending, oldest {age} old", meta)
    else:
        backlog = Finding.ok(f"{pending} events pending", **meta)
    ids = lambda state: [r[0] for r in conn.execute(sql.SQL(  # noqa: E731
        "SELECT id FROM {} WHERE state = %s ORDER BY id LIMIT 20").format(sync_table(schema, "inbox")),
        (state,)).fetchall()]
    parked_f = (Finding(False, "WARN", f"{parked} events parked waiting for a parent", {"count": parked,
                "inbox_ids": ids("parked")}) if parked else Finding.ok("no parked events", count=0))
    dead_f = (Finding(False, "ERROR", f"{dead} dead-lettered events (see `garden-pipeline events list`)",
                      {"count": dead, "inbox_ids": ids("dead_lettered")}) if dead
              else Finding.ok("no dead letters", count=0))
    return [("inbox_backlog", backlog), ("parked_events", parked_f), ("dead_letters", dead_f)]
