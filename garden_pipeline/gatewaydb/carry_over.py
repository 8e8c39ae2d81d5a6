"""Carrying rows over from the previous full extract's staging table: a landing stages only what changed.

A full sync lands the whole extract even when nothing changed, the common case: at a million rows that
was 1.5 s of parsing, checking and COPY for rows staged identically an hour before. So a full landing
takes over the staging table of the entity's newest applied full extract. Every staged row keeps the
digest of its JSON text (``extract.row_digests``); a row of the new extract whose digest is known stays
where it is, the known rows the new extract does not repeat are deleted, and only the other rows are
decoded and COPYed. The result is, row for row, the table landing the whole extract would have built
(``test_carry_over`` holds it to that), so apply, the drift checks and repair read it as before.

Why this is exact:

* only rows the run decoder took have a digest; its values are a function of the row's text alone, and
  it declines absent optional and unknown fields, so a carried row adds nothing to the schema-drift
  counts. Rows landed one by one (and rejected rows) get no digest and are landed again every time;
* a row that repeats an already carried row (an identical duplicate) is landed, without a digest, so
  duplicate resolution sees both; a carried row among duplicates gets its new document position first;
* the old batch is taken only when it is applied, not locked by anyone (NOWAIT, else a plain landing),
  and has exactly the new staging table's columns; all of it inside the landing's transaction, so a
  broken body leaves the old table as it was.
"""

from __future__ import annotations

import numpy as np
import psycopg
from psycopg import sql

from garden_pipeline.catalogue import Entity
from garden_pipeline.extract.row_digests import DIGEST_BYTES, digests, split_run
from garden_pipeline.gatewaydb import untouched
from garden_pipeline.gatewaydb.sql import ident, sync_table
from garden_pipeline.gatewaydb.tables import DIGEST_COLUMN as DIGEST
from garden_pipeline.gatewaydb.tables import sync_schema

NEW, TWIN = -1, -2  # KnownRows.match: a row to land with its digest / without (it repeats a carried row)
_BUILD_BLOCK = 1 << 16  # rows entered into the hash table at a time
_CHUNK_BLOCKS = 1024  # table pages (8 MiB) whose digests the takeover reads at a time


class KnownRows:
    """The digests of the rows staged in the taken-over table, and which of them this extract repeats.

    64-bit halves in numpy arrays, in the table's physical order: 16 bytes and a few array slots per row,
    not a Python dict (about 140 bytes per row; 60 MB more peak memory at 450k rows). They are filled a
    chunk of the table at a time (``add``), never held as one blob first. A row is looked up
    first where the previous run's last known row stood plus one: the taken-over table holds the rows in
    the previous extract's order, so an unchanged stretch of the extract is matched with two vectorised
    compares. Rows not found there go to an open-addressing hash table of the digests (built on first
    need): a binary search of 450k digests for every row of a no-change sync took 0.3 s.
    """

    def __init__(self, capacity: int = 0):
        # np.empty: pages beyond the rows actually added are never touched, so cost no memory.
        self._hi = np.empty(capacity, dtype="<u8")
        self._lo = np.empty(capacity, dtype="<u8")
        self._n = 0
        self._slots: np.ndarray | None = None
        self._cursor = 0
        self.matched = np.zeros(0, dtype=bool)
        self.ordinals = np.zeros(0, dtype=np.int32)
        self._taken: tuple[np.ndarray, np.ndarray] | None = None
        # Ids whose staged row the takeover deleted (no digest), None if too many to list: no carried row
        # has them, so a landed row with one of them cannot repeat a carried row.
        self.dropped: list[str] | None = []

    @classmethod
    def of(cls, blob: bytes) -> "KnownRows":
        known = cls()
        known.add(blob)
        return known.seal()

    def add(self, blob: bytes) -> None:
        """Append the digests (16 bytes each, concatenated) of the next rows in table order."""
        keys = np.frombuffer(blob, dtype="<u8").reshape(-1, 2)
        n, m = self._n, len(keys)
        if n + m > len(self._hi):  # more rows than the capacity guessed: grow
            size = max(n + m, 2 * len(self._hi))
            for name in ("_hi", "_lo"):
                grown = np.empty(size, dtype="<u8")
                grown[:n] = getattr(self, name)[:n]
                setattr(self, name, grown)
        self._hi[n:n + m], self._lo[n:n + m] = keys[:, 0], keys[:, 1]
        self._n = n + m

    def seal(self) -> "KnownRows":
        """Every digest is added: ready to match."""
        self._hi, self._lo = self._hi[:self._n], self._lo[:self._n]
        self.matched = np.zeros(self._n, dtype=bool)
        # Document positions; int32 halves this array, and widens should an extract ever pass 2**31 rows.
        self.ordinals = np.zeros(self._n, dtype=np.int32)
        return self

    def __len__(self) -> int:
        return len(self._hi)

    @property
    def carried(self) -> int:
        return int(self.matched.sum())

    def _table(self) -> np.ndarray:
        """Linear probing, at most half full; a digest's low bits are its home slot (xxh3 spreads them).

        Filled a block of rows at a time, so the temporary arrays stay small beside the table itself."""
        if self._slots is None:
            n = len(self._hi)
            size = 1 << max(4, (2 * n - 1).bit_length())
            mask = size - 1
            slots = np.full(size, -1, dtype=np.int32)
            for start in range(0, n, _BUILD_BLOCK):
                home = (self._hi[start:start + _BUILD_BLOCK] & np.uint64(mask)).astype(np.int32)
                pending = np.arange(len(home), dtype=np.int32)
                step = 0
                while pending.size:  # in round k every row still pending tries home + k
                    at = (home[pending] + step) & mask
                    free = slots[at] < 0
                    slots[at[free]] = pending[free] + start  # rows that clash over a slot: one of them gets it
                    pending, step = pending[slots[at] != pending + start], step + 1
            self._slots = slots
        return self._slots

    def _lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        slots = self._table()
        mask = len(slots) - 1
        home = (hi & np.uint64(mask)).astype(np.int64)
        out = np.full(len(hi), NEW, dtype=np.int64)
        active, step = np.arange(len(hi)), 0
        while active.size:  # probe on until the row is found or an empty slot says it is not there
            k = slots[(home[active] + step) & mask]
            at = np.maximum(k, 0)
            hit = (k >= 0) & (self._hi[at] == hi[active]) & (self._lo[at] == lo[active])
            out[active[hit]] = k[hit]
            active, step = active[(k >= 0) & ~hit], step + 1
        return out

    def _find(self, digests: list[bytes]) -> np.ndarray:
        n, known = len(digests), len(self._hi)
        if not known:
            return np.full(n, NEW, dtype=np.int64)
        q = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        at = self._cursor
        m = max(0, min(n, known - at))
        out = np.full(n, NEW, dtype=np.int64)
        same = (self._hi[at:at + m] == q[:m, 0]) & (self._lo[at:at + m] == q[:m, 1])
        out[:m] = np.where(same, np.arange(at, at + m), NEW)
        miss = np.flatnonzero(out < 0)
        if miss.size:
            out[miss] = self._lookup(q[miss, 0], q[miss, 1])
        found = out[out >= 0]
        if found.size:
            self._cursor = int(found[-1]) + 1
        return out

    def match(self, digests: list[bytes]) -> np.ndarray:
        """Per digest: the index of the known row it repeats, else NEW, or TWIN if that row is taken already."""
        idx = self._find(digests)
        hits = idx[idx >= 0]
        # Twins are identical duplicate rows, rare. Within the run: a known row hit twice. Matched in place,
        # the hits rise strictly, which one pass tells; only otherwise are they sorted to see.
        repeated = hits.size and (self.matched[hits].any() or (
            not (hits[1:] > hits[:-1]).all() and np.unique(hits).size != hits.size))
        if repeated:
            hits = np.flatnonzero(idx >= 0)
            seen: set[int] = set()
            for j in hits.tolist():
                k = int(idx[j])
                if self.matched[k] or k in seen:
                    idx[j] = TWIN
                else:
                    seen.add(k)
        return idx

    def take(self, idx: np.ndarray) -> None:
        """The run with these ``match`` results was accepted: its known rows are carried over."""
        positions = np.flatnonzero(idx >= 0)
        rows = idx[positions]
        self.matched[rows] = True
        self._taken = (rows, positions)

    def place(self, ordinal: int) -> None:
        """The last taken run starts after document position ``ordinal``: remember where its rows stand."""
        if self._taken is not None:
            rows, positions = self._taken
            if positions.size and ordinal + 1 + int(positions[-1]) > np.iinfo(self.ordinals.dtype).max:
                self.ordinals = self.ordinals.astype(np.int64)
            self.ordinals[rows] = ordinal + 1 + positions
            self._taken = None

    def ordinal_of(self, digest: bytes) -> int | None:
        """The new document position of the carried row with this digest (None: not a carried row)."""
        q = np.frombuffer(digest, dtype="<u8")
        k = int(self._lookup(q[:1], q[1:])[0])
        return int(self.ordinals[k]) if k >= 0 and self.matched[k] else None

    def unrepeated(self) -> str:
        """Digests of the known rows this extract did not repeat (changed or deleted since), in no set order,
        as one ``bytea[]`` literal ("" if none): psycopg dumping a list of 20k bytes took 0.1 s."""
        left = ~self.matched
        pairs = np.empty((int(left.sum()), 2), dtype="<u8")
        pairs[:, 0], pairs[:, 1] = self._hi[left], self._lo[left]
        text = pairs.tobytes().hex()
        step = 2 * DIGEST_BYTES
        return "{" + ",".join("\\\\x" + text[i:i + step] for i in range(0, len(text), step)) + "}" if text else ""


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
        with conn.transaction():  # a savepoint: giving up releases the locks taken here
            row = conn.execute(
                sql.SQL("SELECT batch_id, stage_table, rows + rejected FROM {} WHERE entity = %s AND mode = 'full' "
                        "AND NOT dry_run AND applied_at IS NOT NULL ORDER BY applied_at DESC LIMIT 1 "
                        "FOR UPDATE NOWAIT").format(sync_table(schema, "landed_extracts")), (entity.name,)).fetchone()
            base = f'"{sync}"."{row[1]}"' if row else None
            if base is None or conn.execute("SELECT to_regclass(%s)", (base,)).fetchone()[0] is None:
                raise psycopg.Rollback()
            old = ident(sync, row[1])
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(old))
            if _layout(conn, base) != _layout(conn, f'"{sync}"."{new_table}"'):
                raise psycopg.Rollback()
            known, dropped = KnownRows(capacity=row[2]), []
            for blob, ids in _digest_chunks(conn, old, base):
                known.add(blob or b"")
                dropped += ids or []
            known.seal()
            if dropped:
                conn.execute(sql.SQL("DELETE FROM {} WHERE {} IS NULL").format(old, ident(DIGEST)))
            conn.execute(sql.SQL("DROP TABLE {}").format(ident(sync, new_table)))
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, ident(new_table)))
            conn.execute(sql.SQL("DELETE FROM {} WHERE batch_id = %s AND entity = %s").format(
                sync_table(schema, "landed_extracts")), (row[0], entity.name))
            untouched.carry_ledger(conn, schema, entity.name, row[0], new_batch)
            known.dropped = dropped if len(dropped) <= untouched.MAX_LISTED else None
            taken = known
    except psycopg.errors.LockNotAvailable:
        return None
    return taken


def _digest_chunks(conn: psycopg.Connection, table: sql.Composable, name: str):
    """The taken-over table's digests and the ids of its rows without one, a range of pages at a time.

    In physical order (a TID range scan), so the cursor of ``KnownRows`` finds the rows in the order the
    previous extract had them; in chunks, so no 7 MB blob (and its copy in libpq) is held at once.
    """
    pages = conn.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                         (name,)).fetchone()[0]
    # One scan for both: the digests (binary: the raw 16 bytes a row, not twice that in hex to parse; string_agg
    # skips the NULLs) and the ids of the rows without one, which the takeover deletes.
    query = sql.SQL("SELECT string_agg({d}, ''::bytea), array_agg(id) FILTER (WHERE {d} IS NULL) FROM {t} "
                    "WHERE ctid >= %s::tid {below}")
    middle = query.format(d=ident(DIGEST), t=table, below=sql.SQL("AND ctid < %s::tid"))
    last = query.format(d=ident(DIGEST), t=table, below=sql.SQL(""))  # and whatever lies past the size read
    for first in range(0, max(pages, 1), _CHUNK_BLOCKS):
        if first + _CHUNK_BLOCKS < pages:
            yield conn.execute(middle, (f"({first},0)", f"({first + _CHUNK_BLOCKS},0)"), binary=True).fetchone()
        else:
            yield conn.execute(last, (f"({first},0)",), binary=True).fetchone()


def drop_unrepeated(cur: psycopg.Cursor, schema: str, entity: str, batch_id: str, table: str,
                    known: KnownRows, landed: set[str] | None) -> list[str] | None:
    """Delete the taken-over rows this extract no longer has (changed or gone); before duplicates are judged.

    Their ids, but for those among the ``landed`` ids (None: not known), go to the apply ledger's ``gone``:
    rows the next apply must consider for tombstoning. Returns them all (None: too many to list).
    """
    left = known.unrepeated()
    if not left:
        return []
    return untouched.note_gone(cur, schema, entity, batch_id, sql.SQL(
        # A parameter, but planned as a constant (psycopg's statements are unnamed): a hashed = ANY.
        "DELETE FROM {} WHERE {} = ANY(%(digests)s::bytea[]) RETURNING id").format(
        ident(sync_schema(schema), table), ident(DIGEST)), {"digests": left}, landed)


def place_carried_duplicates(cur: psycopg.Cursor, stage: sql.Composable, ordinal: str, ids: list[str],
                             known: KnownRows) -> None:
    """Give carried rows among these duplicated ids their new document position (the tie-break)."""
    found = cur.execute(sql.SQL("SELECT {d} FROM {s} WHERE id = ANY(%s) AND {d} IS NOT NULL").format(
        d=ident(DIGEST), s=stage), (ids,)).fetchall()
    fixes = [(d, o) for (d,) in found if (o := known.ordinal_of(bytes(d))) is not None]
    if fixes:
        cur.execute(sql.SQL("UPDATE {s} s SET {o} = v.o FROM unnest(%s::bytea[], %s::bigint[]) AS v(d, o) "
                            "WHERE s.{d} = v.d").format(s=stage, o=ident(ordinal), d=ident(DIGEST)),
                    ([d for d, _ in fixes], [o for _, o in fixes]))
