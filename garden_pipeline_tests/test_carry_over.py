"""Carrying rows over from the previous full extract's staging table (gatewaydb/carry_over.py).

The promise: a landing that carries rows over stages exactly what landing the whole extract stages,
with the same counts and rejects. Each step below lands the same body twice in one schema: once
where the previous batch is applied (so it is taken over) and once where it is not (a plain landing),
and compares the two staging tables row for row.
"""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import psycopg
import pytest

from garden_pipeline.extract import stream
from garden_pipeline.extract.stream import ExtractError
from garden_pipeline.gatewaydb import carry_over, migrate, staging
from garden_pipeline.gatewaydb.carry_over import TWIN, KnownRows
from garden_pipeline.gatewaydb.connection import connect, libpq_url
from garden_pipeline.gatewaydb.staging import land_extract
from garden_pipeline.gatewaydb.tables import sync_schema
from garden_pipeline.extract.row_digests import digests
from garden_pipeline.simulator.dataset import ModelGardenState

KEY = "use_case_llm_models"  # subscriptions: several 64 KiB runs at this scale
ENTITY = "subscription"


def _body(rows: list[dict] | None, generated_at: str = "2025-08-01T00:00:00Z") -> bytes:
    doc = {"generated_at": generated_at}
    if rows is not None:
        doc[KEY] = rows
    return json.dumps(doc, separators=(",", ":")).encode()


def _land(pg_url, schema, run_id, body, dry_run=False):
    with connect(pg_url) as conn:
        landed = land_extract(conn, schema, run_id, [body[i:i + 20_000] for i in range(0, len(body), 20_000)],
                              [ENTITY], mode="full", dry_run=dry_run)
    return landed.batch_id, landed.entities[ENTITY]


def _applied(db, schema, batch_id, yes=True):
    db.execute(f'UPDATE "{sync_schema(schema)}".landed_extracts SET applied_at = {"now()" if yes else "NULL"} '
               "WHERE batch_id = %s", (batch_id,))


def _staged(db, schema, le) -> list[str]:
    # Everything but _ord and _digest: carried rows keep their old position, which only breaks ties among
    # duplicates (and is set anew for those; the duplicate steps below check the winner). Digests: see _digests.
    table = f'"{sync_schema(schema)}"."{le.stage_table}"'
    rows = db.execute(f"SELECT to_jsonb(s) - '_ord' - '_digest' FROM {table} s").fetchall()
    return sorted(json.dumps(r[0], sort_keys=True) for r in rows)


def _digests(db, schema, le) -> set[tuple]:
    table = f'"{sync_schema(schema)}"."{le.stage_table}"'
    return set(db.execute(f"SELECT id, _digest FROM {table} WHERE _digest IS NOT NULL").fetchall())


def _rejects(db, schema, run_id) -> list[tuple]:
    return sorted(db.execute(f'SELECT record_id, reason, raw::text FROM "{sync_schema(schema)}".rejected_records '
                             "WHERE run_id = %s", (run_id,)).fetchall())


def _counts(le) -> tuple:
    return (le.rows, le.rejected, le.duplicates, le.unknown_fields, le.rejected_by_field, le.type_changes,
            le.missing_required, le.absent_optional)


def _steps(base: list[dict]):
    rng = random.Random(11)
    yield "identical", [dict(r) for r in base]
    changed = [dict(r) for r in base]
    for i in rng.sample(range(len(changed)), len(changed) // 20):
        changed[i]["status"] = "suspended" if changed[i]["status"] != "suspended" else "active"
        changed[i]["updated_time"] = "2025-08-02T00:00:00Z"
    gone = set(rng.sample(range(len(changed)), len(changed) // 100))
    changed = [r for i, r in enumerate(changed) if i not in gone]
    new = dict(changed[0], id="sub-new-1")
    yield "5% changed, 1% deleted, one new", changed[:50] + [new] + changed[50:]
    shuffled = list(changed)
    rng.shuffle(shuffled)
    yield "same rows, another order", shuffled
    twin = list(changed)
    twin.insert(300, dict(changed[700]))  # an identical duplicate, earlier in the document
    yield "an identical duplicate", twin
    tie = list(changed)
    rival = dict(tie[40], status="suspended" if tie[40]["status"] != "suspended" else "active")
    # Same id and updated_time: the later occurrence wins the tie. The carried row comes last, but its
    # old position (41) is before the rival's (near the end): it must be given its new one.
    tie.append(rival)
    tie.append(tie.pop(40))
    yield "a duplicate tied on updated_time, the carried one last", list(tie)
    tie.append(tie.pop(0))
    yield "a duplicate tied on updated_time", tie
    twice = [dict(r) for r in changed]
    flip = "suspended" if twice[60]["status"] != "suspended" else "active"
    twice[60] = dict(twice[60], status=flip, updated_time="2025-08-03T00:00:00Z")  # changed: not carried
    twice.insert(500, dict(twice[60], updated_time="2025-08-04T00:00:00Z"))  # and listed again, newer
    yield "a changed row listed twice", twice
    odd = [dict(r) for r in changed]
    odd[10]["tier"] = "gold"  # unknown field
    odd[20].pop("status")  # a required field missing: rejected
    odd[30]["created_time"] = "2025-07-15T14:00:00+16:00"  # invalid offset: rejected
    yield "rows that go one by one", odd
    yield "the array absent", None
    yield "back again", [dict(r) for r in changed]


DEPLOYED = (carry_over.CHUNK_PAGES, carry_over.WINDOW_CHUNKS)
_REORDERED = {"same rows, another order", "an identical duplicate"}  # the steps into a shuffled order and back


def _window(monkeypatch, pages: int, chunks: int) -> None:
    """A window of ``chunks`` ranges of ``pages`` pages, with runs as much smaller as the ranges are: as
    deployed a run is a small part of one range, not more rows than the whole window holds."""
    monkeypatch.setattr(carry_over, "CHUNK_PAGES", pages)
    monkeypatch.setattr(carry_over, "WINDOW_CHUNKS", chunks)
    monkeypatch.setattr(stream, "RUN_CHARS", max(1 << 12, stream.RUN_CHARS * pages // DEPLOYED[0]))
    if (pages, chunks) != DEPLOYED:  # and the rows staged anew (and rejects) go to the background a few at a time
        monkeypatch.setattr(staging, "_BUFFERED_ROWS", 7)
        monkeypatch.setattr(staging, "_REJECT_FLUSH", 1)


@pytest.mark.parametrize("pages, chunks", [DEPLOYED, (8, 3)],
                         ids=["window as deployed", "a window of 3 x 8 pages"])
def test_a_carried_landing_stages_what_a_whole_landing_stages(pg_url, schema, db, monkeypatch, pages, chunks):
    # With a small window, rows are read in many page ranges, which leave it, are sought and run out of it.
    _window(monkeypatch, pages, chunks)
    # Every step carries, however scattered the steps before left the table (a small window relands much
    # of a shuffled extract): what is compared here is carrying itself. The limit has its own test.
    monkeypatch.setattr(carry_over, "SCATTERED_LIMIT", float("inf"))
    migrate.upgrade(pg_url, schema)
    base = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=12_000, seed=3).rows(ENTITY)]
    assert len(base) > 1500
    previous, _ = _land(pg_url, schema, "first", _body(base))
    before = base
    for n, (label, rows) in enumerate(_steps(base)):
        body = _body(rows)
        _applied(db, schema, previous)  # the carried landing takes this batch over
        carried_batch, carried = _land(pg_url, schema, f"carry-{n}", body)
        # Taken over when the array starts: an absent array takes nothing, the old batch stays.
        assert db.execute(f'SELECT count(*) FROM "{sync_schema(schema)}".landed_extracts WHERE batch_id = %s',
                          (previous,)).fetchone()[0] == (0 if rows is not None else 1), label
        # Nothing applied now (the batch an absent array left in place included): a plain landing.
        db.execute(f'UPDATE "{sync_schema(schema)}".landed_extracts SET applied_at = NULL')
        _, whole = _land(pg_url, schema, f"whole-{n}", body)
        assert whole.carried == 0, label
        # Into the shuffled order and back out of it, a window smaller than the table carries what its ranges
        # happen to hold, which depends on how the server lays pages out (PostgreSQL 16 leaves empty pages
        # where 15 does not); in production SCATTERED_LIMIT lands such a table whole. Every other step carries.
        if rows and before and (label not in _REORDERED or (pages, chunks) == DEPLOYED):
            assert carried.carried > len(rows) // 2, label  # it did carry rows over
        before = rows
        assert _counts(carried) == _counts(whole), label
        assert _staged(db, schema, carried) == _staged(db, schema, whole), label
        # A row that repeats a carried one is staged without a digest (landed again next time); every
        # digest kept is its row's own.
        assert _digests(db, schema, carried) <= _digests(db, schema, whole), label
        assert _rejects(db, schema, f"carry-{n}") == _rejects(db, schema, f"whole-{n}"), label
        previous = carried_batch


def _known(pg_url, schema, cur, rows: list[bytes], base: int = 10_000) -> KnownRows:
    """KnownRows over a table of these rows (digests in this physical order, ordinals at most ``base``)."""
    migrate.upgrade(pg_url, schema)
    table = f'"{sync_schema(schema)}".known'
    cur.execute(f"CREATE TABLE {table} (id text, _digest bytea, _ord bigint)")
    with cur.copy(f"COPY {table} FROM STDIN") as copy:
        for i, (row, d) in enumerate(zip(rows, digests(rows))):
            copy.write_row((json.loads(row)["id"], d, i + 1))
    return KnownRows(cur, psycopg.sql.Identifier(sync_schema(schema), "known"), table, base, (schema, ENTITY, "b1"))


def test_known_rows_tell_new_rows_and_twins(pg_url, schema):
    rows = [json.dumps({"id": f"x{i}"}).encode() for i in range(50)]
    with connect(pg_url) as conn, conn.cursor() as cur:
        known = _known(pg_url, schema, cur, rows[:40])
        run = [rows[3], rows[45], rows[3], rows[7]]
        idx = known.match(digests(run))
        assert idx[1] < 0 and idx[2] == TWIN and idx[0] >= 0 and idx[3] >= 0
        known.take(idx)
        known.place(100)
        assert known.match(digests([rows[7]]))[0] == TWIN  # carried already in an earlier run
        assert sorted(known.finish(cur, set())) == sorted(f"x{i}" for i in range(40) if i not in (3, 7))
        assert known.carried == 2
        assert cur.execute(f'SELECT id FROM "{sync_schema(schema)}".known ORDER BY id').fetchall() == [("x3",), ("x7",)]
        assert known.ordinal_of(cur, digests([rows[7]])[0], 0) == 10_000 + 104


@pytest.mark.parametrize("probes, scan", [(carry_over._PROBES, carry_over._SCAN_ROWS), (1, 0), (3, 0),
                                          (carry_over._PROBES, 10**9)])
def test_known_rows_find_rows_in_any_order_as_a_dict_would(pg_url, schema, monkeypatch, probes, scan):
    """In order (the cursor), shuffled, missing and new rows (the hash table): every lookup as a dict's.

    With fewer slots looked at a step, rows in longer clusters take several steps (1: one slot a step); with
    no hash table at all, every row is looked up in a pass over the window (``_SCAN_ROWS``)."""
    monkeypatch.setattr(carry_over, "_PROBES", probes)
    monkeypatch.setattr(carry_over, "_SCAN_ROWS", scan)
    rng = random.Random(11)
    rows = [json.dumps({"id": f"x{i}", "v": rng.random()}).encode() for i in range(5_000)]
    known_digests = digests(rows[:4_000])
    reference = {d: i for i, d in enumerate(known_digests)}
    extract = rows[:1_000] + rows[1_100:2_500] + rows[4_000:4_300] + rows[2_500:4_000]  # in order, a gap, new rows
    tail = extract[2_000:]
    rng.shuffle(tail)
    extract[2_000:] = tail  # and then out of order
    with connect(pg_url) as conn, conn.cursor() as cur:
        known = _known(pg_url, schema, cur, rows[:4_000])  # a few dozen pages: all in the window
        looked = [int(i) for run in range(0, len(extract), 333) for i in known._find(digests(extract[run:run + 333]))]
        known.abandon()
    assert looked == [reference.get(d, -1) for d in digests(extract)]


@pytest.mark.parametrize("out, before, replacing", [
    ([10, 11, -1, 13, 14], None, [True]),  # a changed row: where its old version stands
    ([10, 11, -1, -1, 14, 15], None, [True, True]),
    ([10, 11, -1, 14, 15], None, [True]),  # and next to rows the extract dropped
    ([10, 11, -1, 22, 23], None, [False]),  # but not across more than _STAND_IN of them
    ([10, 11, -1, 12, 13], None, [False]),  # a row put in: no known row stands there
    ([10, 11, -1, -1, 12, 13], None, [False, False]),
    ([-1, 11, 12], 9, [True]),  # the row found just before the run is the left neighbour
    ([-1, 11, 12], None, [False]),
    ([-1, -1, 500, -1, -1], 0, [False] * 4),  # a lone row found is no evidence: it may be a coincidence
    ([10, 11, -1], None, [False]),  # nothing found after it: it may be the first row of a shifted stretch
    ([10, 11] + [-1] * 9 + [21, 22], None, [False] * 9),  # more than _STAND_IN in a row
    ([10, 11] + [-1] * 8 + [20, 21], None, [True] * 8),
])
def test_rows_standing_where_known_rows_stand_are_taken_for_changed_rows(out, before, replacing):
    out = np.array(out, dtype=np.int64)
    miss = np.flatnonzero(out < 0)
    assert carry_over._replacing(out, miss, before).tolist() == replacing


def test_rows_shifted_by_dropped_rows_are_found_near_the_cursor_not_hashed(pg_url, schema, monkeypatch):
    """One row in 40 dropped: the rest of each run stands a place or more further on in the table. They are
    found in the stretch around the cursor (``_near``). The changed rows stand where their old versions
    do, between rows found in place: they are new without a lookup (``_replacing``), but for the odd one
    next to a dropped row."""
    hashed = []
    lookup = KnownRows._lookup
    monkeypatch.setattr(KnownRows, "_lookup", lambda self, hi, lo: hashed.append(len(hi)) or lookup(self, hi, lo))
    rows = [json.dumps({"id": f"x{i}", "pad": "p" * 20}).encode() for i in range(4_000)]
    changed = {i: json.dumps({"id": f"x{i}", "pad": "changed"}).encode() for i in range(5, 4_000, 97)}
    extract = [changed.get(i, r) for i, r in enumerate(rows) if i % 40 != 3]
    reference = {d: i for i, d in enumerate(digests(rows))}
    with connect(pg_url) as conn, conn.cursor() as cur:
        known = _known(pg_url, schema, cur, rows)
        looked = []
        for start in range(0, len(extract), 300):
            idx = known.match(digests(extract[start:start + 300]))
            known.take(idx)
            looked += idx.tolist()
        known.abandon()
    assert looked == [reference.get(d, -1) for d in digests(extract)]
    new = sum(1 for i in changed if i % 40 != 3)  # changed rows the extract still lists
    assert sum(hashed) <= new // 4, hashed


def test_a_landing_leaves_no_garbage_waiting_for_a_full_collection(pg_url, schema):
    """The landing keeps the collector off the old heap (gc.freeze); garbage that was young when it began must
    not outlive it in the oldest generation, where only a full collection would free it."""
    import gc
    import weakref

    class Body:
        pass

    migrate.upgrade(pg_url, schema)
    gc.disable()  # only the landing's own collection may free the cycle
    try:
        garbage = Body()
        garbage.cycle, garbage.payload = garbage, bytearray(1 << 20)
        alive = weakref.ref(garbage)
        del garbage
        _land(pg_url, schema, "gc", _body([{"id": "x1"}]))
        assert alive() is None
    finally:
        gc.enable()


def test_a_window_seeks_past_a_stretch_the_extract_dropped(pg_url, schema, monkeypatch):
    """20 ranges of 2 pages, 3 in the window: after 2,000 rows gone from the extract, it finds its place again."""
    monkeypatch.setattr(carry_over, "CHUNK_PAGES", 2)
    monkeypatch.setattr(carry_over, "WINDOW_CHUNKS", 3)
    rows = [json.dumps({"id": f"x{i}", "pad": "p" * 40}).encode() for i in range(6_000)]
    extract = rows[:1_000] + rows[3_000:]
    with connect(pg_url) as conn, conn.cursor() as cur:
        known = _known(pg_url, schema, cur, rows)
        carried, position = 0, 0
        for start in range(0, len(extract), 200):
            idx = known.match(digests(extract[start:start + 200]))
            known.take(idx)
            known.place(position)
            position += len(idx)
            carried += int((idx >= 0).sum())
            if known.wants_refill():
                known.refill(set())
        freed = known.finish(cur, set())
        left = {r[0] for r in cur.execute(f'SELECT id FROM "{sync_schema(schema)}".known').fetchall()}
    assert carried == known.carried == len(left)
    assert left <= {json.loads(r)["id"] for r in extract}  # every row the extract dropped was deleted
    assert {f"x{i}" for i in range(1_000, 3_000)} <= set(freed)
    assert carried > len(extract) - 800  # the seek found its place within a few runs


def test_a_broken_body_leaves_the_taken_table_as_it_was(pg_url, schema, db):
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=1_000, seed=4).rows(ENTITY)]
    batch, le = _land(pg_url, schema, "good", _body(rows))
    _applied(db, schema, batch)
    before = _staged(db, schema, le)
    with pytest.raises(ExtractError):
        _land(pg_url, schema, "broken", _body(rows[:100] + [{"id": "x"}])[:-30])
    assert _staged(db, schema, le) == before
    _, again = _land(pg_url, schema, "again", _body(rows))
    assert again.carried > 0 and _staged(db, schema, again) == before


def test_a_dry_run_or_a_table_in_use_is_not_taken(pg_url, schema, db):
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=1_000, seed=4).rows(ENTITY)]
    batch, le = _land(pg_url, schema, "good", _body(rows))
    _applied(db, schema, batch)
    _, dry = _land(pg_url, schema, "dry", _body(rows), dry_run=True)
    assert dry.carried == 0 and len(_staged(db, schema, le)) == le.rows
    # A reader (a drift check, say) holds the table: the landing does not wait for it, it lands whole.
    reading, release = threading.Event(), threading.Event()

    def reader():
        with psycopg.connect(libpq_url(pg_url)) as conn:
            conn.execute(f'SELECT count(*) FROM "{sync_schema(schema)}"."{le.stage_table}"')
            reading.set()
            release.wait(30)

    t = threading.Thread(target=reader)
    t.start()
    try:
        assert reading.wait(10)
        _, busy = _land(pg_url, schema, "busy", _body(rows))
    finally:
        release.set()
        t.join()
    assert busy.carried == 0 and busy.rows == le.rows and _staged(db, schema, busy) == _staged(db, schema, le)


def test_a_table_landed_before_ord_base_was_kept_is_taken_over_whole(pg_url, schema, db):
    """A batch with no ord_base (landed by an older version): the next landing starts above its largest ordinal."""
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=1_000, seed=4).rows(ENTITY)]
    batch, le = _land(pg_url, schema, "old", _body(rows))
    db.execute(f'UPDATE "{sync_schema(schema)}".landed_extracts SET ord_base = NULL')
    # As an older landing that carried rows may have left it: ordinals above rows + rejected.
    db.execute(f'UPDATE "{sync_schema(schema)}"."{le.stage_table}" SET _ord = _ord + 5000')
    _applied(db, schema, batch)
    before = _staged(db, schema, le)
    changed = [dict(r, updated_time="2030-01-01T00:00:00Z") if i % 10 == 0 else r for i, r in enumerate(rows)][:-5]
    _, again = _land(pg_url, schema, "new", _body(changed))
    assert again.ord_base == len(rows) + 5000
    assert again.carried == len(changed) - len(changed[::10])
    _, whole = _land(pg_url, schema, "whole", _body(changed))
    assert _staged(db, schema, again) == _staged(db, schema, whole) != before


def test_rows_the_last_landing_changed_are_carried_from_the_tables_end(pg_url, schema, db, monkeypatch):
    """A sync after a changed one: the rows it changed were appended at the table's end, out of the extract's
    order; the window holds those ranges from the start, so they are carried, not landed again."""
    _window(monkeypatch, 8, 5)
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=12_000, seed=3).rows(ENTITY)]
    changed = [dict(r, updated_time="2030-01-01T00:00:00Z") if i % 20 == 7 else r for i, r in enumerate(rows)]
    batch, _ = _land(pg_url, schema, "first", _body(rows))
    _applied(db, schema, batch)
    batch, le = _land(pg_url, schema, "changed", _body(changed))
    assert le.carried == len(rows) - len(rows[7::20])
    pages = db.execute(f"SELECT pg_relation_size('\"{sync_schema(schema)}\".\"{le.stage_table}\"') / 8192").fetchone()[0]
    assert pages > 8 * 5  # more ranges than the window holds
    _applied(db, schema, batch)
    _, again = _land(pg_url, schema, "again", _body(changed))
    assert again.carried == len(rows)


def test_ranges_of_empty_pages_at_the_tables_end_take_no_place_in_the_window(pg_url, schema, db, monkeypatch):
    """PostgreSQL 16 and later extend a table by many pages per COPY, so a staging table can end in pages with
    no rows. Read into the window, they pushed the last real range out before its rows came (found on the
    embedded PostgreSQL 16). Here the empty pages are made on any server: rows added and deleted again."""
    _window(monkeypatch, 8, 5)
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=12_000, seed=3).rows(ENTITY)]
    batch, le = _land(pg_url, schema, "first", _body(rows))
    table = f'"{sync_schema(schema)}"."{le.stage_table}"'
    db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")  # nothing may truncate them meanwhile
    last = db.execute(f"SELECT max(ctid) FROM {table}").fetchone()[0]
    db.execute(f"INSERT INTO {table} SELECT * FROM {table}")
    db.execute(f"DELETE FROM {table} WHERE ctid > %s::tid", (last,))
    pages = db.execute(f"SELECT pg_relation_size('{table}') / 8192").fetchone()[0]
    assert pages >= 2 * db.execute(f"SELECT count(DISTINCT (ctid::text::point)[0]) FROM {table}").fetchone()[0] - 1
    _applied(db, schema, batch)
    _, again = _land(pg_url, schema, "again", _body(rows))
    assert again.carried == len(rows)


def _scattered(db, schema, batch) -> int:
    return db.execute(f'SELECT scattered FROM "{sync_schema(schema)}".landed_extracts WHERE batch_id = %s',
                      (batch,)).fetchone()[0]


def test_a_table_too_scattered_to_take_over_is_landed_whole(pg_url, schema, db):
    """Rows a carrying landing stages anew stand at the table's end, out of the extract's order, and add up
    sync after sync; past SCATTERED_LIMIT of the rows the extract is landed whole, in its order, and the count
    starts again."""
    migrate.upgrade(pg_url, schema)
    rows = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=12_000, seed=3).rows(ENTITY)]
    batch, first = _land(pg_url, schema, "first", _body(rows))
    assert _scattered(db, schema, batch) == first.scattered == 0
    scattered = 0
    for n in range(1, 25):
        step = [dict(r, updated_time=f"2030-01-{n:02d}T00:00:00Z") if i % 25 == n % 25 else r
                for i, r in enumerate(rows)]  # 4 % of the rows changed, others each time
        _applied(db, schema, batch)
        batch, le = _land(pg_url, schema, f"step-{n}", _body(step))
        if scattered > carry_over.SCATTERED_LIMIT * len(rows):
            break
        assert le.carried >= len(rows) - len(rows[n % 25::25]), n
        assert le.scattered == _scattered(db, schema, batch) == scattered + len(rows) - le.carried, n
        scattered = le.scattered
        rows = step
    else:
        pytest.fail("never landed whole")
    assert n >= 3  # it carried rows over until the scatter passed the limit
    assert le.carried == 0 and le.scattered == _scattered(db, schema, batch) == 0  # landed whole
    _applied(db, schema, batch)
    _, again = _land(pg_url, schema, "after", _body(step))
    assert again.carried == len(step)  # and the next landing carries every row again
