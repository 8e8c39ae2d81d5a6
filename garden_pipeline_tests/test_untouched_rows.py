"""Comparing only the rows that may differ (gatewaydb/untouched.py) gives what comparing all of them gives.

Two GatewayDB schemas go through the same steps: the same extracts, the same edits made behind the
pipeline's back. One applies with the apply ledger (narrowed to candidates where it can prove the rest
untouched), the other always compares every row. After every step both hold the same rows and report
the same counts and rejects, and on the quiet steps the first really did compare only a few rows.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone


from garden_pipeline.catalogue import CATALOGUE, by_name
from garden_pipeline.gatewaydb import migrate, untouched
from garden_pipeline.gatewaydb.apply import DeletePolicy, apply_landed, delete_preview
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.gatewaydb.staging import find_landed, land_extract
from garden_pipeline.gatewaydb.tables import sync_schema
from garden_pipeline.simulator.dataset import ModelGardenState

START = datetime(2025, 8, 1, tzinfo=timezone.utc)
SUBS, LIMITS, USE_CASES = (by_name(n) for n in ("subscription", "llm_model_limit", "use_case"))


def _body(rows: dict[str, list[dict]], generated_at: datetime) -> bytes:
    doc = {"generated_at": generated_at.isoformat().replace("+00:00", "Z")}
    for e in CATALOGUE:
        doc[e.extract_key] = rows[e.name]
    return json.dumps(doc, separators=(",", ":")).encode()


def _sync(pg_url, schema, run_id, body) -> dict[str, tuple]:
    with connect(pg_url, autocommit=True) as conn:
        land_extract(conn, schema, run_id, [body[i:i + 30_000] for i in range(0, len(body), 30_000)],
                     [e.name for e in CATALOGUE], mode="full")
        out = {}
        for e in CATALOGUE:
            ref = find_landed(conn, schema, e.name, run_id)
            preview = delete_preview(conn, schema, e.name, ref.stage_table, ref.generated_at, ref.batch_id)
            c = apply_landed(conn, schema, ref, run_id, DeletePolicy(allow_large_delete=True))
            assert preview[0] == c.deleted, (e.name, preview, c.deleted)  # the preview agrees with the apply
            out[e.name] = ((c.inserted, c.updated, c.deleted, c.unchanged, c.rejected, c.stale), c.compared, ref.rows)
    return out


def _gateway(db, schema) -> dict[str, list]:
    return {e.name: sorted(json.dumps(r[0], sort_keys=True) for r in db.execute(
        f'SELECT to_jsonb(t) - \'synced_at\' FROM "{schema}"."{e.table}" t').fetchall()) for e in CATALOGUE}


def _rejects(db, schema, run_id) -> list:
    return sorted(db.execute(f'SELECT entity, record_id, reason FROM "{sync_schema(schema)}".rejected_records '
                             "WHERE run_id = %s", (run_id,)).fetchall())


def _steps(state: ModelGardenState):
    """(label, rows per entity, SQL run on GatewayDB ({s}: its schema) before the landing, the entity whose
    rows must all be compared this time, if any)."""
    rows = {e.name: [dict(r) for r in state.rows(e.name)] for e in CATALOGUE}
    subs, limits = rows["subscription"], rows["llm_model_limit"]
    sub_t, lim_t, uc_t = f'"{{s}}"."{SUBS.table}"', f'"{{s}}"."{LIMITS.table}"', f'"{{s}}"."{USE_CASES.table}"'
    yield "no change", copy.deepcopy(rows), [], None
    for r in subs[::20]:
        r["status"] = "suspended" if r["status"] != "suspended" else "active"
    del subs[5:9]
    live = {r["id"] for r in subs}
    limits[:] = [r for r in limits if r["subscription_id"] in live]
    subs.insert(3, dict(subs[0], id="sub-new-1"))
    yield "5% changed, some deleted, one new", copy.deepcopy(rows), [], None
    yield "a limit edited by hand", copy.deepcopy(rows), [
        f"UPDATE {lim_t} SET requests_per_minute = 1 WHERE id = '{limits[7]['id']}'"], None
    yield "a limit deleted by hand (hard delete: everything is compared)", copy.deepcopy(rows), [
        f"DELETE FROM {lim_t} WHERE id = '{limits[11]['id']}'"], "llm_model_limit"
    # A full compare must list in the ledger the live rows its staging table does not vouch for: a row newer
    # than the extract (made so by hand, or inserted by hand and not in the extract at all) and the orphans
    # (their subscription gone). When those ids leave the extract, nothing else would make the narrowed apply
    # look at them ({later}: this extract + 30 min).
    stale, orphaned = limits[13]["id"], subs[60]["id"]
    rows["subscription"] = subs = [r for r in subs if r["id"] != orphaned]  # its limits stay: orphans
    yield "limits made newer by hand, orphaned, one deleted (everything compared)", copy.deepcopy(rows), [
        f"UPDATE {lim_t} SET source_ts = '{{later}}' WHERE id = '{stale}'",
        f"INSERT INTO {lim_t} SELECT 'lim-by-hand', subscription_id, requests_per_minute, tokens_per_minute, "
        f"tokens_per_day, created_time, updated_time, deleted_at, '{{later}}', synced_at FROM {lim_t} "
        f"WHERE id = '{limits[19]['id']}'",
        f"DELETE FROM {lim_t} WHERE id = '{limits[17]['id']}'"], "llm_model_limit"
    limits[:] = [r for r in limits if r["id"] != stale and r["subscription_id"] != orphaned]
    yield "those limits gone from the next extract", copy.deepcopy(rows), [], None
    yield "a row inserted by hand", copy.deepcopy(rows), [
        f"INSERT INTO {sub_t} SELECT 'sub-by-hand', use_case_id, model_id, status, created_time, updated_time, "
        f"deleted_at, source_ts, synced_at FROM {sub_t} WHERE id = '{subs[20]['id']}'"], None
    # Not in the extract and newer than it: the tombstoning leaves it live, so the ledger must list it; the
    # next extract is newer than the row, and then the full compare tombstones it.
    yield "a row inserted by hand, newer than the extract", copy.deepcopy(rows), [
        f"INSERT INTO {sub_t} SELECT 'sub-by-hand-newer', use_case_id, model_id, status, created_time, "
        f"updated_time, deleted_at, '{{later}}', synced_at FROM {sub_t} WHERE id = '{subs[21]['id']}'"], None
    yield "that row older than the next extract", copy.deepcopy(rows), [], None
    yield "a live row tombstoned by hand", copy.deepcopy(rows), [
        f"UPDATE {sub_t} SET deleted_at = now() WHERE id = '{subs[30]['id']}'"], None
    yield "a row newer than the next extract (stale)", copy.deepcopy(rows), [
        f"UPDATE {sub_t} SET status = 'suspended', source_ts = '2030-01-01Z' WHERE id = '{subs[40]['id']}'"], None
    yield "still newer", copy.deepcopy(rows), [], None
    yield "the newer row written back to an older time", copy.deepcopy(rows), [
        f"UPDATE {sub_t} SET source_ts = '2025-01-01Z' WHERE id = '{subs[40]['id']}'"], None
    gone_uc = rows["use_case"][2]["id"]
    rows["use_case"] = [r for r in rows["use_case"] if r["id"] != gone_uc]  # its subscriptions stay: orphans
    yield "a parent removed, its children kept", copy.deepcopy(rows), [], None
    yield "the orphans again", copy.deepcopy(rows), [], None
    # A frozen row still shows the xmin of its writer (PostgreSQL 9.4+), so freezing changes nothing here.
    yield "every row frozen by VACUUM", copy.deepcopy(rows), [f"VACUUM (FREEZE) {sub_t}"], None
    yield "a live row updated by an event-like write", copy.deepcopy(rows), [
        f"UPDATE {sub_t} SET status = 'cancelled', source_ts = source_ts + interval '1 second' "
        f"WHERE id = '{subs[50]['id']}'", f"UPDATE {uc_t} SET deleted_at = source_ts WHERE id = "
        f"'{rows['use_case'][4]['id']}'"], None
    last = subs.pop()
    yield "the last subscription gone", copy.deepcopy(rows), [], None
    subs.append(last)
    yield "back to normal", copy.deepcopy(rows), [], None
    yield "an extract older than the last one (its rows are stale)", copy.deepcopy(rows), [], "*"
    yield "newer again", copy.deepcopy(rows), [], None


def test_narrowed_applies_match_full_compares(pg_url, schema, other_schema, db, monkeypatch):
    full_schema = other_schema
    real = untouched.candidates
    monkeypatch.setattr(untouched, "candidates",
                        lambda conn, s, *a, **k: None if s == full_schema else real(conn, s, *a, **k))
    for s in (schema, full_schema):
        migrate.upgrade(pg_url, s)
    state = ModelGardenState(scale=6_000, seed=5)
    at = START
    steps = list(_steps(state))
    first = {e.name: [dict(r) for r in state.rows(e.name)] for e in CATALOGUE}
    for s in (schema, full_schema):
        _sync(pg_url, s, "initial", _body(first, at))
    narrowed_steps = 0
    for n, (label, rows, edits, compares_all) in enumerate(steps):
        at += timedelta(hours=-3 if label.startswith("an extract older") else 1)
        body = _body(rows, at)
        results = []
        for s in (schema, full_schema):
            for statement in edits:
                db.execute(statement.format(s=s, later=(at + timedelta(minutes=30)).isoformat()))
            results.append(_sync(pg_url, s, f"step-{n}", body))
        narrow, full = results
        assert {k: v[0] for k, v in narrow.items()} == {k: v[0] for k, v in full.items()}, label
        assert _gateway(db, schema) == _gateway(db, full_schema), label
        assert _rejects(db, schema, f"step-{n}") == _rejects(db, full_schema, f"step-{n}"), label
        for name in ("subscription", "llm_model_limit"):
            _, compared, staged = narrow[name]
            if compares_all in (name, "*"):
                assert compared == staged, (label, name)  # it could not narrow: it compared all
            else:
                assert compared < staged // 10, (label, name, compared)  # it compared only a few rows
                narrowed_steps += 1
    assert narrowed_steps >= 2 * len(steps) - 4
    # The repairs happened (in both): the hand edits did not survive.
    assert db.execute(f'SELECT count(*) FROM "{schema}"."{SUBS.table}" WHERE id = \'sub-by-hand\' '
                      "AND deleted_at IS NULL").fetchone()[0] == 0


def test_hard_deletes_are_counted_even_for_replicas(pg_url, schema, db):
    migrate.upgrade(pg_url, schema)
    table = f'"{schema}"."{by_name("project").table}"'
    counter = f'SELECT n FROM "{sync_schema(schema)}".hard_deletes WHERE entity = \'project\''
    assert db.execute(counter).fetchone() is None
    db.execute(f"DELETE FROM {table} WHERE false")
    assert db.execute(counter).fetchone()[0] == 1
    with db.transaction():
        db.execute("SET LOCAL session_replication_role = replica")
        db.execute(f"DELETE FROM {table}")
        db.execute(f"TRUNCATE {table} CASCADE")
    assert db.execute(counter).fetchone()[0] == 3


def test_an_apply_inside_another_transaction_leaves_no_ledger(pg_url, schema, db):
    # Its writes carry a subtransaction's id, not the one a ledger would name: the next apply compares all.
    migrate.upgrade(pg_url, schema)
    state = ModelGardenState(scale=2_000, seed=8)
    rows = {e.name: [dict(r) for r in state.rows(e.name)] for e in CATALOGUE}
    _sync(pg_url, schema, "first", _body(rows, START))
    ledger = f'SELECT count(*) FROM "{sync_schema(schema)}".apply_ledger'
    assert db.execute(ledger).fetchone()[0] == len(CATALOGUE)
    with connect(pg_url) as conn:  # not autocommit: everything below is one outer transaction
        body = _body(rows, START + timedelta(hours=1))
        land_extract(conn, schema, "nested", [body], ["subscription"], mode="full")
        ref = find_landed(conn, schema, "subscription", "nested")
        counts = apply_landed(conn, schema, ref, "nested", DeletePolicy())
        assert counts.compared == ref.rows
        conn.commit()
    assert db.execute(ledger + " WHERE entity = 'subscription'").fetchone()[0] == 0
    again = _sync(pg_url, schema, "again", _body(rows, START + timedelta(hours=2)))
    assert again["subscription"][1] == again["subscription"][2]  # nothing to vouch: compared all
    assert again["use_case"][1] < again["use_case"][2] // 10  # its own ledger still holds
