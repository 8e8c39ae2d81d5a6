"""Carrying rows over from the previous full extract's staging table: a landing stages only what changed.

A full sync lands the whole extract even when nothing changed, the common case: at a million rows that
was 1.5 s of parsing, checking and COPY for rows staged identically an hour before. So a full landing
takes over the staging table of the entity's newest applied full extract. Every staged row keeps the
digest of its JSON text (``extract.row_digests``); a row of the new extract whose digest is known stays
where it is, the known rows the new extract does not repeat are deleted, and only the other rows are
decoded and COPYed. The result is, row for row, the table landing the whole extract would have built
(``test_carry_over`` holds it to that), so apply, the drift checks and repair read it as before.

Memory stays flat: the taken-over table's digests are not held all at once but read into a window of a
few ranges of its pages (``KnownRows``), in the table's physical order, which is the previous extract's
order. The window moves along with the extract; a range that leaves it has its rows the
extract did not repeat deleted then and there.

Why this is exact:

* only rows the run decoder took have a digest; its values are a function of the row's text alone, and
  it declines absent optional and unknown fields, so a carried row adds nothing to the schema-drift
  counts. Rows landed one by one (and rejected rows) get no digest and are landed again every time;
* a row is carried only when its digest is found in the window, so nothing unknown is ever kept. A
  known row the window does not hold just then (or takes for a changed one, ``_replacing``) is landed
  again like a new one, and its old copy is deleted when its range leaves the window. The two copies
  are told apart by their ordinals: this landing numbers its rows above every ordinal of the taken-over
  table (``ord_base``);
* a row that repeats an already carried row (an identical duplicate) is landed, without a digest, so
  duplicate resolution sees both; a carried row among duplicates gets its new document position first;
* the old batch is taken only when it is applied, not locked by anyone (NOWAIT, else a plain landing),
  and has exactly the new staging table's columns; all of it inside the landing's transaction, so a
  broken body leaves the old table as it was.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity
from garden_pipeline.extract.row_digests import DIGEST_BYTES, digests, split_run
from garden_pipeline.gatewaydb import untouched
from garden_pipeline.gatewaydb.background import Background
from garden_pipeline.gatewaydb.sql import ident, sync_table
from garden_pipeline.gatewaydb.tables import DIGEST_COLUMN as DIGEST
from garden_pipeline.gatewaydb.tables import ORDINAL_COLUMN as ORDINAL
from garden_pipeline.gatewaydb.tables import sync_schema

_PROBES = 8  # slots of a row's probe sequence looked at in one step
_STAND_IN = 8  # missed rows in a row, between rows found in place, taken for changed rows (``_replacing``)
_NEAR, _NEAR_MIN = 64, 32  # rows either side of a run's stretch searched before the hash table; from this many missed
_SCAN_ROWS = 16  # rows looked up in a pass over the window each, between two moves of it, before the hash table
NEW, TWIN = -1, -2  # KnownRows.match: a row to land with its digest / without (it repeats a carried row)
CHUNK_PAGES = 256  # table pages (2 MiB, some 12k subscriptions) the window takes in at a time
WINDOW_CHUNKS = 6  # page ranges held at once; the one matched least recently leaves first
PINNED_CHUNKS = 2  # of them, ranges at the table's end holding the previous landing's rows, held throughout
# Past this share of its rows staged out of the extract's order, a table is not taken over: the extract is
# landed whole, in its order. Without it, ten syncs each after 5 % changes took the carried share from 95 %
# to 70 % and the landing from 1.3 s to 4.0 s, against 2.0 s for a whole one (1M rows, bench/drift.py): rows
# changed two or more syncs ago stand in ranges the window does not hold and are landed again, adding to it.
SCATTERED_LIMIT = 0.10
_SAMPLE_BELOW = 4  # the seek index holds the rows whose digest's last byte is below this: 1 in 64
_QUIET_RUNS = 8  # after a seek that found nothing, runs before the next one
_FRESH, _HELD, _DONE = 0, 1, 2  # a page range: not read yet / in the window / left it (its leftovers deleted)
# A page range read and found to hold none of the taken-over rows: nothing to match or delete, so it takes no
# place in the window. PostgreSQL 16 and later extend a table by many pages at once in a COPY, so a table
# can end in ranges of empty pages; held, they pushed the last real range out before its rows came.
_EMPTY = 3


@dataclass
class _Chunk:
    no: int  # the page range: pages [no * CHUNK_PAGES, (no + 1) * CHUNK_PAGES), the last one open-ended
    n: int  # rows with a digest it held when read
    at: int = 0  # where its rows start in the window's arrays
    used: int = 0  # the run counter when a row of it was last matched
    undigested: int = 0  # rows without a digest in it, deleted when it leaves
    pinned: bool = False  # holds rows the previous landing appended: in the window until the end


def _literal(hi: np.ndarray, lo: np.ndarray) -> str:
    """Digests as one ``bytea[]`` literal: psycopg dumping a list of 20k bytes took 0.1 s."""
    pairs = np.empty((len(hi), 2), dtype="<u8")
    pairs[:, 0], pairs[:, 1] = hi, lo
    text = pairs.tobytes().hex()
    step = 2 * DIGEST_BYTES
    return "{" + ",".join("\\\\x" + text[i:i + step] for i in range(0, len(text), step)) + "}"


class KnownRows:
    """The digests of the taken-over table's rows, a window of its page ranges at a time.

    In numpy arrays of 64-bit halves, in the table's physical order. A row is looked up first where the
    previous run's last known row stood plus one: an unchanged stretch of the extract is matched with two
    vectorised compares. Rows not found there, but for those taken for changed rows (``_replacing``), go to
    an open-addressing hash table of the window (built on first need; the odd few between two moves are
    looked for in a pass over it). The window moves on (``wants_refill``, ``refill``) when the extract's
    rows reach the middle of its newest range, and seeks (``_seek``) when a run's rows are mostly not in
    it, through an index of one row in 64 read on first need. Positions in the window's arrays are valid until the next
    ``refill``.

    Its statements run in a background queue (``background``), in order, while the landing parses on:
    the deletes of a range that left the window need no answer, and the range after the newest one held
    is read ahead. Until ``finish`` the landing hands its own statements (COPY, rejects) to ``write``.
    """

    def __init__(self, cur: psycopg.Cursor, table: sql.Composable, name: str, base: int,
                 ledger: tuple[str, str, str], previous: int | None = None, scattered: int = 0):
        self.base = base  # this landing's ordinals start above it; the taken-over rows' are at most it
        self.scattered = scattered  # the taken-over table's rows out of the extract's order (SCATTERED_LIMIT)
        self._table, self._ledger = table, ledger
        pages = cur.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                            (name,)).fetchone()[0]
        self._state = np.zeros(max(1, -(-pages // CHUNK_PAGES)), dtype=np.int8)
        self._held: list[_Chunk] = []
        self._hi = self._lo = np.empty(0, dtype="<u8")
        self._matched = np.zeros(0, dtype=bool)
        self._pos = np.zeros(0, dtype=np.int32)  # new document positions of the carried rows
        self._slots: np.ndarray | None = None
        self._scanned = 0  # rows looked up by a pass over the window since it moved (_SCAN_ROWS)
        self._cursor = -1
        self._hot: _Chunk | None = None  # the range of the last row found
        self._clock = 0
        self._pinned = np.zeros(0, dtype=bool)
        self._run = 0  # rows in the last run
        self._lost: np.ndarray | None = None  # digests of a run mostly not found: where to seek
        self._quiet = 0
        self._sample: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._taken: tuple[np.ndarray, np.ndarray] | None = None
        # Carried rows' document positions per range that left the window, for ``ordinal_of``: in the order
        # they stand in the table, as runs of consecutive positions (start index, start position).
        self._places: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.carried = 0
        # Ids of the taken-over rows deleted (not repeated, or without a digest), None past MAX_LISTED: no
        # carried row has them, so a landed row with one of them cannot repeat a carried row.
        self.freed: list[str] | None = []
        self._gone: list[str] | None = []  # of them, those not landed again (yet): the ledger's ``gone``
        self._starts = np.zeros(0, dtype=np.int64)  # where each held range's rows start in the arrays
        # Every statement on the table from here to ``finish`` goes through this queue, so the landing parses
        # on while PostgreSQL deletes, reads ahead and COPYs (``background``).
        self._db = Background(cur.connection, "carry-over")
        self._prefetched: dict[int, Future] = {}  # the range the window will want next, being read already
        try:
            self._move([0, 1][:len(self._state)], None)
            if previous is not None:
                self._pin(previous)
        except BaseException:
            self._db.abandon()
            raise

    def _pin(self, previous: int) -> None:
        """Hold the ranges at the table's end that the previous landing appended rows to (ordinals above
        ``previous``): rows it changed stand there, in document order but apart from the rest, and the next
        extract lists them among the others. Not when it landed the first range too (it landed it all)."""
        def appended(no: int, above: int = previous) -> int:
            cond, params = self._range(no)
            return self._db.call(lambda cur: cur.execute(sql.SQL(
                "SELECT count(*) FROM {t} WHERE {c} AND {o} > %(above)s").format(
                    t=self._table, c=cond, o=ident(ORDINAL)), {**params, "above": above}).fetchone()[0])

        last = len(self._state) - 1
        while last > 0 and not appended(last, 0):  # empty pages at the end (_EMPTY); ordinals start at 1
            last -= 1
        if last < 2 or appended(0):
            return
        pins = []
        # At least three ranges stay for the body: the range being matched, one ahead, one to move into.
        for no in range(last, max(1, last - min(PINNED_CHUNKS, WINDOW_CHUNKS - 3)), -1):
            if not appended(no):
                break
            pins.append(no)
        self._move(pins, None)
        for c in self._held:
            c.pinned = c.no in pins
        self._pinned = np.array([c.pinned for c in self._held])

    # -- where a page range is, and reading one ---------------------------------------------------------

    def _range(self, no: int) -> tuple[sql.Composable, dict]:
        params = {"first": f"({no * CHUNK_PAGES},0)", "end": f"({(no + 1) * CHUNK_PAGES},0)", "base": self.base}
        if no == len(self._state) - 1:  # open-ended: whatever lies past the size read at the start
            return sql.SQL("ctid >= %(first)s::tid AND {o} <= %(base)s").format(o=ident(ORDINAL)), params
        return sql.SQL("ctid >= %(first)s::tid AND ctid < %(end)s::tid AND {o} <= %(base)s").format(
            o=ident(ORDINAL)), params

    def _fetch(self, cur: psycopg.Cursor, no: int) -> tuple[bytes | None, int]:
        """A range's digests, in the background: (their bytes, rows without one)."""
        cond, params = self._range(no)
        # Binary: the raw 16 bytes a row, not twice that in hex to parse; string_agg skips the NULLs, and a
        # TID range scan yields the rows in their physical order.
        return cur.execute(sql.SQL("SELECT string_agg({d}, ''::bytea), count(*) FILTER (WHERE {d} IS NULL) "
                                   "FROM {t} WHERE {c}").format(d=ident(DIGEST), t=self._table, c=cond),
                           params, binary=True).fetchone()

    def _read(self, no: int, fetching: Future) -> tuple[_Chunk, np.ndarray]:
        blob, undigested = self._db.result(fetching)
        keys = np.frombuffer(blob or b"", dtype="<u8").reshape(-1, 2)
        return _Chunk(no, len(keys), undigested=undigested), keys

    def _prefetch(self) -> None:
        """Start reading the range after the newest one the window holds: the one it will want next."""
        body = [c.no for c in self._held if not c.pinned]
        no = max(body) + 1 if body else -1
        if no in self._prefetched or not 0 <= no < len(self._state) or self._state[no] != _FRESH:
            return
        self._prefetched = {no: self._db.submit(self._fetch, no)}  # one at a time: memory stays flat

    def _delete(self, cur: psycopg.Cursor, cond: sql.Composable, params: dict, relanded: set[str] | None) -> None:
        # Never prepared: psycopg prepares a statement run five times, and a generic plan would not hash an
        # ``= ANY(array)`` parameter (a linear search of the array per row; 0.1 s a statement, not 3 ms).
        ids = [r[0] for r in cur.execute(sql.SQL("DELETE FROM {t} WHERE {c} RETURNING id").format(
            t=self._table, c=cond), params, prepare=False)]
        self.freed = _extend_capped(self.freed, ids)
        self._gone = _extend_capped(self._gone, ids if relanded is None else [i for i in ids if i not in relanded])

    def _leave(self, chunk: _Chunk, relanded: set[str] | None) -> None:
        """The range leaves the window: delete its rows the extract did not repeat, note where its carried rows went."""
        s = slice(chunk.at, chunk.at + chunk.n)
        kept = self._matched[s]
        if chunk.undigested or not kept.all():
            cond, params = self._range(chunk.no)
            left = ~kept
            params["digests"] = _literal(self._hi[s][left], self._lo[s][left]) if left.any() else "{}"
            self._db.submit(self._delete, sql.SQL("{c} AND ({d} IS NULL OR {d} = ANY(%(digests)s::bytea[]))").format(
                c=cond, d=ident(DIGEST)), params, relanded)
        pos = self._pos[s][kept]
        if pos.size:
            starts = np.concatenate(([0], np.flatnonzero(np.diff(pos) != 1) + 1))
            self._places[chunk.no] = (starts, pos[starts].astype(np.int64))
        self._state[chunk.no] = _DONE

    def _move(self, wanted: list[int], relanded: set[str] | None) -> None:
        """Read the ``wanted`` ranges into the window; ranges past WINDOW_CHUNKS leave it, least recently used first."""
        # Read before the ranges leaving are deleted (the queue runs in order), unless read ahead already.
        fetching = [(no, self._prefetched.pop(no, None) or self._db.submit(self._fetch, no))
                    for no in dict.fromkeys(wanted) if self._state[no] == _FRESH]
        new = []
        for no, f in fetching:
            chunk, keys = self._read(no, f)
            if chunk.n or chunk.undigested:
                self._state[no] = _HELD
                new.append((chunk, keys))
            else:
                self._state[no] = _EMPTY
        # The range of the last row found and those just after it stay longest: the extract goes on there.
        hot = self._hot.no if self._hot is not None else -1
        held = sorted(self._held, key=lambda c: (c.pinned or hot <= c.no <= hot + WINDOW_CHUNKS, c.used))
        while held and len(held) + len(new) > WINDOW_CHUNKS:
            self._leave(held.pop(0), relanded)
        held.sort(key=lambda c: c.at)
        his, los, matched, pos, chunks, at = [], [], [], [], [], 0
        for c in held:
            s = slice(c.at, c.at + c.n)
            his.append(self._hi[s]), los.append(self._lo[s]), matched.append(self._matched[s]), pos.append(self._pos[s])
            chunks.append(c)
        for c, keys in new:
            his.append(keys[:, 0]), los.append(keys[:, 1])
            matched.append(np.zeros(c.n, dtype=bool)), pos.append(np.zeros(c.n, dtype=self._pos.dtype))
            c.used = self._clock
            chunks.append(c)
        kept_hot = self._hot is not None and self._hot in held and self._cursor >= 0
        cursor = self._cursor - self._hot.at if kept_hot else None
        for c in chunks:
            c.at, at = at, at + c.n
        self._held = chunks
        self._starts = np.array([c.at for c in chunks], dtype=np.int64)
        self._pinned = np.array([c.pinned for c in chunks], dtype=bool)
        self._hi, self._lo = np.concatenate(his) if his else self._hi[:0], np.concatenate(los) if los else self._lo[:0]
        self._matched = np.concatenate(matched) if matched else self._matched[:0]
        self._pos = np.concatenate(pos) if pos else self._pos[:0]
        self._slots, self._scanned = None, 0
        if cursor is not None:
            self._cursor = self._hot.at + cursor
        else:  # the last row found left the window: look where the new ranges start
            self._hot, self._cursor = None, (new[0][0].at if new else -1)
        self._prefetch()

    # -- moving the window -----------------------------------------------------------------------------

    def _ahead(self) -> list[int]:
        """The unread ranges after the last row found that the window needs to hold two runs' worth ahead of it."""
        hot, wanted = self._hot, []
        if hot is None or self._cursor < 0:
            return wanted
        no, ahead = hot.no, hot.at + hot.n - self._cursor
        while ahead < max(2 * self._run, hot.n // 2) and no + 1 < len(self._state) and self._state[no + 1] != _DONE:
            no += 1
            if self._state[no] == _FRESH:
                wanted.append(no)
                ahead += hot.n  # about as many rows as the last
            elif self._state[no] == _HELD:
                ahead += next(c.n for c in self._held if c.no == no)
            # _EMPTY: no rows there; look past it
        return wanted

    def wants_refill(self) -> bool:
        """Whether the window should move before the next run (``refill``)."""
        return self._lost is not None or bool(self._ahead())

    def refill(self, relanded: set[str] | None) -> None:
        wanted = []
        if self._lost is not None:
            wanted = self._seek(self._lost)
            self._lost = None
            if not wanted:
                self._quiet = _QUIET_RUNS
        self._move(wanted + self._ahead(), relanded)

    def write(self, fn, *args) -> Future:
        """Queue the landing's own statement (``fn(cursor, *args)``) among the window's: it must not use the
        connection itself until ``finish``."""
        return self._db.submit(fn, *args)

    def wait(self, future: Future):
        return self._db.result(future)

    def abandon(self) -> None:
        """The landing failed: stop the queue (nothing more runs), before its transaction rolls back."""
        self._db.abandon()

    def _seek(self, lost: np.ndarray) -> list[int]:
        """The unread ranges holding rows of this run, found through an index of one row in 64 (read once)."""
        if self._sample is None:
            blob, pages = self._db.call(lambda cur: cur.execute(sql.SQL(
                "SELECT string_agg({d}, ''::bytea), array_agg((ctid::text::point)[0]::bigint) FROM {t} "
                "WHERE get_byte({d}, 15) < %(below)s AND {o} <= %(base)s").format(
                    d=ident(DIGEST), t=self._table, o=ident(ORDINAL)),
                {"below": _SAMPLE_BELOW, "base": self.base}, binary=True).fetchone())
            keys = np.frombuffer(blob or b"", dtype="<u8").reshape(-1, 2)
            order = np.argsort(keys[:, 0], kind="stable")
            self._sample = (keys[order, 0], keys[order, 1], np.asarray(pages or [], dtype=np.int64)[order])
        hi, lo, pages = self._sample
        if not hi.size:
            return []
        at = np.minimum(np.searchsorted(hi, lost[:, 0]), hi.size - 1)
        hit = (hi[at] == lost[:, 0]) & (lo[at] == lost[:, 1])
        nos = np.minimum(pages[at[hit]] // CHUNK_PAGES, len(self._state) - 1)
        return [int(no) for no in np.unique(nos) if self._state[no] == _FRESH][:2]

    def finish(self, cur: psycopg.Cursor, relanded: set[str] | None) -> list[str] | None:
        """The array ended: delete the taken-over rows it did not repeat. Returns ``freed``."""
        for chunk in self._held:
            self._leave(chunk, relanded)
        self._held = []
        for no in np.flatnonzero(self._state == _FRESH).tolist():  # never read: none of their rows came
            self._db.submit(self._delete, *self._range(no), relanded)
            self._state[no] = _DONE
        self._prefetched = {}
        self._db.close()  # everything queued has run; the connection is the caller's again
        gone = self._gone
        if gone is not None and relanded is not None:  # some were landed again after their range left
            gone = [i for i in gone if i not in relanded]
        untouched.note_gone(cur, *self._ledger, gone)
        return self.freed

    # -- matching --------------------------------------------------------------------------------------

    def _table_slots(self) -> np.ndarray:
        """Linear probing, at most a quarter full; a digest's low bits are its home slot (xxh3 spreads them)."""
        if self._slots is None:
            n = len(self._hi)
            # A quarter full, not half: clusters stay short enough that one look at _PROBES slots settles
            # almost every row (at half full the probe loop ran a dozen numpy rounds per run; 2 MB, not 1).
            size = 1 << max(4, (4 * n - 1).bit_length())
            mask = size - 1
            slots = np.full(size, -1, dtype=np.int32)
            home = (self._hi & np.uint64(mask)).astype(np.int32)
            pending = np.arange(n, dtype=np.int32)
            step = 0
            while pending.size:  # in round k every row still pending tries home + k
                at = (home[pending] + step) & mask
                free = slots[at] < 0
                slots[at[free]] = pending[free]  # rows that clash over a slot: one of them gets it
                pending, step = pending[slots[at] != pending], step + 1
            self._slots = slots
        return self._slots

    def _lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        if self._slots is None and self._scanned + len(hi) <= _SCAN_ROWS:
            # A few rows since the window moved: a pass over its digests each (40 us at 72k rows) is cheaper
            # than the hash table (1-2 ms to build after every move, for the odd row a run did not find).
            self._scanned += len(hi)
            out = np.full(len(hi), NEW, dtype=np.int64)
            for i in range(len(hi)):
                at = np.flatnonzero(self._hi == hi[i])
                at = at[self._lo[at] == lo[i]]
                if at.size:
                    out[i] = at[0]
            return out
        slots = self._table_slots()
        mask = len(slots) - 1
        home = (hi & np.uint64(mask)).astype(np.int64)
        out = np.full(len(hi), NEW, dtype=np.int64)
        span = np.arange(_PROBES)
        active, step = np.arange(len(hi)), 0
        # _PROBES slots of every row's sequence at once: a row is found there, or absent once an empty slot
        # comes first (rows are only ever added, so none stands past an empty slot of its sequence).
        while active.size:
            k = slots[(home[active, None] + (step + span)) & mask]
            at = np.maximum(k, 0)
            hit = (k >= 0) & (self._hi[at] == hi[active, None]) & (self._lo[at] == lo[active, None])
            found = hit.any(axis=1)
            out[active[found]] = k[found, hit[found].argmax(axis=1)]
            active, step = active[~found & (k >= 0).all(axis=1)], step + _PROBES
        return out

    def _near(self, at: int, n: int, q: np.ndarray, miss: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Find missed rows among the known rows just around the cursor; returns those still missed.

        A row the extract dropped shifts every later row of the run by one, so the compare in place
        misses the rest of the run: in a 1M-row sync with 1 % of the limits dropped, 448k rows went to
        the hash table (0.3 s). They stand a few places on, so a sorted copy of that stretch finds them.
        """
        start, end = max(0, at - _NEAR), min(len(self._hi), at + n + _NEAR)
        near = self._hi[start:end]
        order = np.argsort(near)
        j = order[np.minimum(np.searchsorted(near[order], q[miss, 0]), order.size - 1)] + start
        ok = (self._hi[j] == q[miss, 0]) & (self._lo[j] == q[miss, 1])
        out[miss[ok]] = j[ok]
        return miss[~ok]

    def _find(self, digests: list[bytes]) -> np.ndarray:
        n, known = len(digests), len(self._hi)
        self._clock, self._run = self._clock + 1, n
        out = np.full(n, NEW, dtype=np.int64)
        q = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        if known:
            at = self._cursor
            if 0 <= at < known:
                m = min(n, known - at)
                same = (self._hi[at:at + m] == q[:m, 0]) & (self._lo[at:at + m] == q[:m, 1])
                out[:m] = np.where(same, np.arange(at, at + m), NEW)
            miss = np.flatnonzero(out < 0)
            if miss.size:
                miss = miss[~_replacing(out, miss, at - 1 if 0 <= at <= known else None)]
            if miss.size >= _NEAR_MIN and 0 <= at < known:
                miss = self._near(at, n, q, miss, out)
                if miss.size:
                    miss = miss[~_replacing(out, miss, at - 1)]
            if miss.size:
                out[miss] = self._lookup(q[miss, 0], q[miss, 1])
            found = out[out >= 0]
            if found.size:
                where = np.searchsorted(self._starts, found, side="right") - 1
                for i in np.flatnonzero(np.bincount(where, minlength=len(self._held))).tolist():
                    self._held[i].used = self._clock
                # The cursor follows the extract through the table's body, not into the pinned ranges.
                body = np.flatnonzero(~self._pinned[where])
                last = int(body[-1]) if body.size else found.size - 1
                self._cursor, self._hot = int(found[last]) + 1, self._held[int(where[last])]
        lost = np.flatnonzero(out < 0)
        if self._quiet:
            self._quiet -= 1
        elif lost.size >= 8 and 4 * lost.size >= n and (self._state == _FRESH).any():
            self._lost = q[lost].copy()
        return out

    def match(self, digests: list[bytes]) -> np.ndarray:
        """Per digest: the window index of the known row it repeats, else NEW, or TWIN if that row is taken already."""
        idx = self._find(digests)
        hits = idx[idx >= 0]
        # Twins are identical duplicate rows, rare. Within the run: a known row hit twice. Matched in place,
        # the hits rise strictly, which one pass tells; only otherwise are they sorted to see.
        repeated = hits.size and (self._matched[hits].any() or (
            not (hits[1:] > hits[:-1]).all() and np.unique(hits).size != hits.size))
        if repeated:
            seen: set[int] = set()
            for j in np.flatnonzero(idx >= 0).tolist():
                k = int(idx[j])
                if self._matched[k] or k in seen:
                    idx[j] = TWIN
                else:
                    seen.add(k)
        return idx

    def take(self, idx: np.ndarray) -> None:
        """The run with these ``match`` results was accepted: its known rows are carried over."""
        positions = np.flatnonzero(idx >= 0)
        rows = idx[positions]
        self._matched[rows] = True
        self.carried += rows.size
        self._taken = (rows, positions)

    def place(self, ordinal: int) -> None:
        """The last taken run starts after document position ``ordinal``: remember where its rows stand."""
        if self._taken is not None:
            rows, positions = self._taken
            if positions.size and ordinal + 1 + int(positions[-1]) > np.iinfo(self._pos.dtype).max:
                self._pos = self._pos.astype(np.int64)  # int32 halves the array; an extract past 2**31 widens it
            self._pos[rows] = ordinal + 1 + positions
            self._taken = None

    def ordinal_of(self, cur: psycopg.Cursor, digest: bytes, page: int) -> int | None:
        """The new ordinal of the carried row with this digest on this page (None: not a carried row).

        After ``finish``: the range's rows left are exactly its carried ones, in the order they were read."""
        no = min(page // CHUNK_PAGES, len(self._state) - 1)
        places = self._places.get(no)
        if places is None:
            return None
        cond, params = self._range(no)
        blob = cur.execute(sql.SQL("SELECT string_agg({d}, ''::bytea) FROM {t} WHERE {c}").format(
            d=ident(DIGEST), t=self._table, c=cond), params, binary=True).fetchone()[0]
        keys = np.frombuffer(blob or b"", dtype="<u8").reshape(-1, 2)
        q = np.frombuffer(digest, dtype="<u8")
        at = np.flatnonzero((keys[:, 0] == q[0]) & (keys[:, 1] == q[1]))
        if not at.size:
            return None
        starts, first = places
        run = int(np.searchsorted(starts, at[0], side="right")) - 1
        return self.base + int(first[run]) + int(at[0] - starts[run])


def _replacing(out: np.ndarray, miss: np.ndarray, before: int | None) -> np.ndarray:
    """Which missed rows stand in for known rows, the way a changed row stands where its old version does:
    a few missed rows (at most _STAND_IN in a row) between two rows found in place, with as many known rows
    between those two as there are missed rows, or a few more (rows the extract dropped). Fewer would mean
    rows put in, which may be known rows from elsewhere (the previous landing's, at the table's end).
    ``before``: the window index of the row found just before the run (None: unknown).
    Found "in place" means next to another row found next to it, so a lone row found by coincidence (in an
    extract out of the table's order) is no evidence.

    They are declared new without a lookup: in a 1M-row sync with 5 % of the rows changed, the lookups that
    could only confirm it, and the hash table rebuilt for them after each move of the window, were 0.3 s of
    the landing. Declaring a row new is always safe, whatever the window holds: it is landed again, and a
    known copy no row matched is deleted when its range leaves the window, as for any row the window missed.
    """
    found = np.flatnonzero(out >= 0)
    idx = out[found]
    step = (np.diff(found) == 1) & (np.diff(idx) == 1)
    paired = np.zeros(found.size, dtype=bool)
    paired[1:] |= step
    paired[:-1] |= step
    pos, idx = found[paired], idx[paired]
    if before is not None:
        pos, idx = np.concatenate(([-1], pos)), np.concatenate(([before], idx))
    if not pos.size:
        return np.zeros(miss.size, dtype=bool)
    j = np.searchsorted(pos, miss)  # the first row found in place after each missed one
    left = np.maximum(j - 1, 0)
    right = np.minimum(j, pos.size - 1)
    rows, known = pos[right] - pos[left], idx[right] - idx[left]
    return (j > 0) & (j < pos.size) & (rows - 1 <= _STAND_IN) & (rows <= known) & (known <= rows + _STAND_IN)


def _extend_capped(ids: list[str] | None, more: list[str]) -> list[str] | None:
    """``ids`` with ``more`` added, or None ("too many to list") past untouched.MAX_LISTED."""
    if ids is None or len(ids) + len(more) > untouched.MAX_LISTED:
        return None
    ids.extend(more)
    return ids


def with_digests(decode, known: KnownRows | None):
    """Wrap an entity's run decoder: ``(items, digests)`` for a run it takes, else None.

    ``items`` has one entry per element, None for a row carried over (already staged); ``digests``
    one per element, None for a row that must not be carried over later.
    """

    def run(text: str):
        raws = split_run(text)
        if raws is None:
            return None
        ds = digests(raws)
        if known is None:
            rows = decode(text)
            return None if rows is None else (rows, ds)
        idx = known.match(ds)
        new = np.flatnonzero(idx < 0).tolist()
        if len(new) == len(raws):
            rows = decode(text)
        elif new:
            rows = decode(",".join(bytes(raws[j]).decode() for j in new))
        else:
            rows = []
        if rows is None:
            return None
        known.take(idx)
        items: list = [None] * len(raws)
        for j, values in zip(new, rows):
            items[j] = values
            if idx[j] == TWIN:
                ds[j] = None
        return items, ds

    return run


def _layout(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(
        "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()


def take_over(conn: psycopg.Connection, schema: str, entity: Entity, new_table: str,
              new_batch: str) -> KnownRows | None:
    """Make the newest applied full extract's staging table ``new_table``, keeping its carriable rows.

    Its apply ledger moves to ``new_batch`` with it (``untouched``), so the next apply may skip the rows
    nobody touched since.

    Must run inside the landing's transaction, after ``new_table`` was created empty. None (and nothing
    changed) when there is no such table, someone holds it, or its columns are not the new table's.
    """
    sync = sync_schema(schema)
    taken = None
    try:
        with conn.transaction(), conn.cursor() as cur:  # a savepoint: giving up releases the locks taken here
            row = cur.execute(
                sql.SQL("SELECT batch_id, stage_table, rows + rejected, ord_base, scattered FROM {} WHERE entity = %s "
                        "AND mode = 'full' AND NOT dry_run AND applied_at IS NOT NULL ORDER BY applied_at DESC "
                        "LIMIT 1 FOR UPDATE NOWAIT").format(sync_table(schema, "landed_extracts")),
                (entity.name,)).fetchone()
            base = f'"{sync}"."{row[1]}"' if row else None
            if base is None or cur.execute("SELECT to_regclass(%s)", (base,)).fetchone()[0] is None:
                raise psycopg.Rollback()
            if row[4] is not None and row[4] > SCATTERED_LIMIT * row[2]:
                raise psycopg.Rollback()  # landed whole instead, back in the extract's order
            old = ident(sync, row[1])
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(old))
            if _layout(conn, base) != _layout(conn, f'"{sync}"."{new_table}"'):
                raise psycopg.Rollback()
            if row[3] is not None:  # its ordinals were ord_base + document position, at most rows + rejected
                ord_base = row[3] + row[2]
            else:  # landed before ord_base was kept
                ord_base = cur.execute(sql.SQL("SELECT COALESCE(max({}), 0) FROM {}").format(
                    ident(ORDINAL), old)).fetchone()[0]
            cur.execute(sql.SQL("DROP TABLE {}").format(ident(sync, new_table)))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, ident(new_table)))
            cur.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s AND entity = %s").format(
                sync_table(schema, "landed_extracts")), (row[0], entity.name))
            untouched.carry_ledger(conn, schema, entity.name, row[0], new_batch)
            taken = KnownRows(cur, ident(sync, new_table), f'"{sync}"."{new_table}"', ord_base,
                              (schema, entity.name, new_batch), previous=row[3], scattered=row[4] or 0)
    except psycopg.errors.LockNotAvailable:
        return None
    return taken


def place_carried_duplicates(cur: psycopg.Cursor, stage: sql.Composable, ids: list[str], known: KnownRows) -> None:
    """Give carried rows among these duplicated ids their new ordinal (the tie-break); after ``finish``."""
    found = cur.execute(sql.SQL("SELECT {d}, (ctid::text::point)[0]::bigint FROM {s} WHERE id = ANY(%s) "
                                "AND {d} IS NOT NULL AND {o} <= %s").format(d=ident(DIGEST), s=stage, o=ident(ORDINAL)),
                        (ids, known.base)).fetchall()
    fixes = [(bytes(d), o) for d, page in found if (o := known.ordinal_of(cur, bytes(d), page)) is not None]
    if fixes:
        cur.execute(sql.SQL("UPDATE {s} s SET {o} = v.o FROM unnest(%s::bytea[], %s::bigint[]) AS v(d, o) "
                            "WHERE s.{d} = v.d AND s.{o} <= %s").format(s=stage, o=ident(ORDINAL), d=ident(DIGEST)),
                    ([d for d, _ in fixes], [o for _, o in fixes], known.base))
