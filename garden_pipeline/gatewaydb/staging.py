"""Landing an extract: validated rows COPYed into an unlogged staging table per entity.

An extract lands in one transaction: if the body breaks off or is not valid
JSON, the transaction rolls back and nothing of it exists. Staging tables are
UNLOGGED (no WAL; they are scratch copies that can be re-fetched) and named
per batch, so a full sync and an incremental sync never share one.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import re
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

import psycopg
from psycopg import sql

from garden_pipeline.catalogue import CATALOGUE, Entity, by_name
from garden_pipeline.extract.runs import compile_run_decoder
from garden_pipeline.extract.stream import ArrayReader, DocumentHeader, ExtractError, walk_extract
from garden_pipeline.extract.validate import RowValidator, parse_timestamp
from garden_pipeline.gatewaydb.binary_copy import binary_converter, copy_types, with_fast_bytea
from garden_pipeline.gatewaydb import untouched
from garden_pipeline.gatewaydb.carry_over import DIGEST, KnownRows, place_carried_duplicates, take_over, with_digests
from garden_pipeline.gatewaydb.sql import columns, ident, sync_table
from garden_pipeline.gatewaydb.tables import ORDINAL_COLUMN as ORDINAL
from garden_pipeline.gatewaydb.tables import sync_schema

REJECTED = "_rejected"  # an invalid row kept by id only, so a full sync does not take it for a deletion
_REJECT_FLUSH = 2000  # rejected rows buffered before they are written (bounds memory on a bad extract)
_SAMPLE = 5
_SEEN_BITS = 1 << 24  # 2 MiB of "id seen" bits per entity: ~3 % false alarms at 450k rows, memory flat
_MAX_SUSPECTS = 100_000  # beyond this many possible duplicates, let PostgreSQL look at every id
_BUFFERED_ROWS = 8192  # carrying over: rows handed to the background COPY at the latest after this many


def _json_default(value: Any):
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


_SURROGATE_ESCAPE = re.compile(r"\\u(d[89a-f][0-9a-f]{2})", re.IGNORECASE)


def raw_json(row: Any) -> str:
    """The row as JSON that jsonb accepts: NUL and lone surrogates are kept as visible escapes."""
    text = json.dumps(row, default=_json_default, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE_ESCAPE.sub(r"\\\\u\1", json.dumps(row, default=_json_default))
    return text.replace("\\u0000", "\\\\u0000")


@dataclass
class LandedEntity:
    """What one entity's part of an extract left in staging."""

    entity: str
    stage_table: str
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    unknown_fields: dict[str, int] = field(default_factory=dict)
    rejected_by_field: dict[str, int] = field(default_factory=dict)
    type_changes: dict[str, int] = field(default_factory=dict)
    missing_required: dict[str, int] = field(default_factory=dict)
    absent_optional: dict[str, int] = field(default_factory=dict)
    reject_samples: list[str] = field(default_factory=list)
    carried: int = 0  # rows kept from the previous full extract's staging table (carry_over)
    ord_base: int = 0  # the ordinals of the rows staged now are ord_base + document position
    scattered: int = 0  # rows of the staging table out of the extract's order (carry_over.SCATTERED_LIMIT)


@dataclass
class LandedExtract:
    batch_id: str
    mode: str
    dry_run: bool
    generated_at: datetime
    updated_since: datetime | None
    bytes_read: int
    entities: dict[str, LandedEntity]


def stage_table_name(entity: Entity, batch_id: str) -> str:
    return f"stage_{entity.table}_{batch_id}"


@functools.cache
def _stage_column_types() -> dict[str, tuple[tuple[str, str], ...]]:
    """Per entity, (column, PostgreSQL type) of its contract fields, as its GatewayDB table declares them.

    Cached, and read from one build of the SQLAlchemy metadata: building it for each of the eight staging
    tables cost 0.1 s a landing, and once per table still 0.04 s of each sync's process (py-spy); the types
    do not depend on the schema the tables live in.
    """
    from sqlalchemy.dialects import postgresql

    from garden_pipeline.gatewaydb.tables import build_metadata

    tables, dialect = build_metadata("s").tables, postgresql.dialect()
    return {e.name: tuple((c.name, c.type.compile(dialect=dialect)) for c in tables[f"s.{e.table}"].columns
                          if c.name in e.field_names) for e in CATALOGUE}


def _create_stage(cur: psycopg.Cursor, schema: str, entity: Entity, table: str) -> None:
    defs = [sql.SQL("{} {}").format(ident(name), sql.SQL(type_)) for name, type_ in _stage_column_types()[entity.name]]
    defs.append(sql.SQL("{} bytea").format(ident(DIGEST)))
    defs.append(sql.SQL("{} bigint NOT NULL").format(ident(ORDINAL)))
    defs.append(sql.SQL("{} boolean NOT NULL").format(ident(REJECTED)))
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(
            ident(sync_schema(schema), table), sql.SQL(", ").join(defs)
        )
    )


def _add_capped(ids: set[str] | None, entity_id: str) -> set[str] | None:
    """Add to a set of ids that turns into None ("too many: check every id") past _MAX_SUSPECTS."""
    if ids is not None:
        ids.add(entity_id)
        if len(ids) > _MAX_SUSPECTS:
            return None
    return ids


class _SeenIds:
    """The ids of one array that may have been seen before, without holding every id in memory.

    Duplicate ids are rare; a one-hash bit set (like a Bloom filter, set by the loader's loop) finds
    the few ids that may repeat, and PostgreSQL then checks only those. ``suspects`` is None when there were too many
    to list: then PostgreSQL checks every id.
    """

    def __init__(self, carrying: bool = False):
        # Carrying over needs no bit set (see ``again``): 2 MiB not spent.
        self.bits = bytearray(0 if carrying else _SEEN_BITS // 8)
        self.suspects: set[str] | None = set()
        # Carrying over: every landed id is a suspect (it may repeat a carried row's), and the ids landed
        # twice are kept apart, in ``again``.
        self.again: set[str] | None = set()

    def suspect(self, entity_id: str) -> None:
        self.suspects = _add_capped(self.suspects, entity_id)

    def seen_again(self, entity_id: str) -> None:
        self.again = _add_capped(self.again, entity_id)

    def carried_suspects(self, freed: list[str] | None) -> set[str] | None:
        """The ids to check once carried rows are in: a landed id whose carried row was deleted (``freed``)
        can only repeat another landed row, and those are in ``again``. None: check every id."""
        if self.suspects is None or self.again is None:
            return None
        if freed is None:
            return self.suspects | self.again
        return (self.suspects - set(freed)) | self.again


@functools.cache
def _run_decoder(entity: Entity):
    return compile_run_decoder(entity)


class _EntityLoader:
    """Streams one entity array into its staging table, diverting invalid rows."""

    def __init__(self, conn: psycopg.Connection, schema: str, run_id: str, entity: Entity, landed: LandedEntity,
                 record_rejects: bool, known: KnownRows | None = None):
        self.conn, self.schema, self.run_id, self.entity, self.landed = conn, schema, run_id, entity, landed
        self.record_rejects, self.known = record_rejects, known
        self.validator = RowValidator(entity)
        self._rejects: list[tuple] = []
        self._ordinal = 0
        self._blank = (None,) * (len(entity.field_names) - 1)
        self.seen = _SeenIds(carrying=known is not None)
        # The run decoder's values are ready for binary COPY; the row-by-row path leaves some as text.
        self._row_values = binary_converter(entity) or (lambda values: values)
        self._types = [*copy_types(entity), "bytea", "bigint", "boolean"]
        self._copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            ident(sync_schema(schema), landed.stage_table), columns((*entity.field_names, DIGEST, ORDINAL, REJECTED))
        )
        self._handed: dict[str, Future] = {}  # carrying over: the last list of each kind handed to the background

    def load(self, rows: ArrayReader) -> None:
        # The hot loop of a landing, a million times per extract. Runs of rows the run decoder took are
        # valid already (and carry each row's text digest); other rows go through the validator's fast
        # path, then its thorough one. A None among a run's items is a row carried over: staged already.
        # The "id seen" bit set is inlined (a Python call per row cost more than the check itself). When
        # carrying over, every landed id is a suspect (it may repeat a carried row's id), and they are few, so
        # they are kept in a set and the ids landed twice are known exactly (``again``), no bit set needed.
        fast, thorough = self.validator.fast, self.validator
        row_values = self._row_values
        bits, mask, suspect, again = self.seen.bits, _SEEN_BITS - 1, self.seen.suspect, self.seen.seen_again
        known = self.known
        ordinal, fast_valid = self._ordinal, 0
        base = known.base if known is not None else 0  # ordinals above every carried row's
        decode = _run_decoder(self.entity)
        runs = rows.runs(with_digests(decode, known) if decode is not None else None)
        with with_fast_bytea(self.conn.cursor()) as cur:
            while True:
                more = moving = False
                with self._rows_out(cur) as (write_row, buffered):
                    for decoded, items in runs:
                        if decoded:
                            items, digests = items
                            fast_valid += len(items)
                            if known is not None:
                                known.place(ordinal)
                        else:
                            row = items[0]  # the careful way hands over one element at a time
                            values = fast(row)
                            if values is None:
                                values, reason = thorough(row)
                                if reason is not None:
                                    ordinal += 1
                                    rid = self._reject(row, reason)
                                    if rid is not None:
                                        write_row((rid, *self._blank, None, base + ordinal, True))
                                    if len(self._rejects) >= _REJECT_FLUSH:
                                        more = True
                                        break  # end this COPY to write rejects, then carry on with a new one
                                    continue
                            else:
                                fast_valid += 1
                            items, digests = (row_values(values),), (None,)
                        for values, digest in zip(items, digests):
                            ordinal += 1
                            if values is None:
                                continue
                            write_row((*values, digest, base + ordinal, False))
                            if known is not None:
                                landed_ids = self.seen.suspects
                                if landed_ids is None:
                                    pass  # too many to list: PostgreSQL checks every id
                                elif values[0] in landed_ids:
                                    again(values[0])
                                else:
                                    suspect(values[0])
                                continue
                            h = hash(values[0]) & mask
                            bit = 1 << (h & 7)
                            if bits[h >> 3] & bit:
                                suspect(values[0])
                            else:
                                bits[h >> 3] |= bit
                        if known is not None:
                            if decoded and known.wants_refill():
                                more = moving = True
                                break  # hand the rows over, move the window of carried rows, carry on
                            if len(buffered) >= _BUFFERED_ROWS:
                                more = True
                                break
                self._flush_rejects(cur)
                if moving:
                    known.refill(self.seen.suspects)
                if not more:
                    break
        self._ordinal = ordinal
        self.validator.stats.valid += fast_valid
        stats = self.validator.stats
        self.landed.rows = stats.valid
        self.landed.rejected += stats.rejected
        self.landed.unknown_fields = dict(stats.unknown_fields)
        self.landed.rejected_by_field = dict(stats.rejected_by_field)
        self.landed.type_changes = dict(stats.type_changes)
        self.landed.missing_required = dict(stats.missing_required)
        self.landed.absent_optional = dict(stats.absent_optional)

    @contextlib.contextmanager
    def _rows_out(self, cur: psycopg.Cursor):
        """Where the loop writes rows: ``(write_row, None)`` into a COPY open on ``cur``; when carrying over,
        ``(append, rows)`` to a list COPYed in the background once the loop hands it over, so the landing
        parses on meanwhile (``background``)."""
        if self.known is None:
            with cur.copy(self._copy_sql) as copy:
                copy.set_types(self._types)
                yield copy.write_row, None
            return
        rows: list[tuple] = []
        yield rows.append, rows
        if rows:
            self._hand_over("rows", self._copy_rows, rows)

    def _hand_over(self, kind: str, fn, *args) -> None:
        """Queue ``fn(cursor, *args)`` once the list of this kind handed over before it has run: one list of
        rows and one of rejects in the queue at a time, so memory stays bounded however far PostgreSQL
        falls behind the parser (a bad extract rejects rows as fast as they are read)."""
        previous = self._handed.get(kind)
        if previous is not None:
            self.known.wait(previous)
        self._handed[kind] = self.known.write(fn, *args)

    def _copy_rows(self, cur: psycopg.Cursor, rows: list[tuple]) -> None:
        with with_fast_bytea(cur).copy(self._copy_sql) as copy:
            copy.set_types(self._types)
            for row in rows:
                copy.write_row(row)

    def _reject(self, row: Any, reason: str) -> str | None:
        """Record an invalid row; return its id if it has a usable one (it still counts as present)."""
        rid = row.get("id") if isinstance(row, dict) else None
        if not isinstance(rid, str) or not rid or "\x00" in rid or len(rid) > 128 or not _utf8(rid):
            rid = None
        if len(self.landed.reject_samples) < _SAMPLE:
            self.landed.reject_samples.append(f"{rid or '?'}: {reason}")
        if self.record_rejects:
            self._rejects.append((self.run_id, self.entity.name, rid, f"{self.entity.name}: {reason}", raw_json(row)))
        return rid

    def _flush_rejects(self, cur: psycopg.Cursor) -> None:
        if self._rejects:
            rows, self._rejects = self._rejects, []
            if self.known is None:
                insert_rejects(cur, self.schema, rows)
            else:
                self._hand_over("rejects", insert_rejects, self.schema, rows)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def insert_rejects(cur: psycopg.Cursor, schema: str, rows: list[tuple]) -> None:
    cur.executemany(
        sql.SQL("INSERT INTO {} (run_id, entity, record_id, reason, raw) VALUES (%s, %s, %s, %s, %s::jsonb)").format(
            sync_table(schema, "rejected_records")
        ),
        rows,
    )


def _resolve_duplicates(cur: psycopg.Cursor, schema: str, run_id: str, entity: Entity, landed: LandedEntity,
                        record_rejects: bool, suspects: set[str] | None, known: KnownRows | None = None) -> None:
    """Keep, per duplicated id, the occurrence with the latest updated_time (then the last one); reject the rest.

    ``suspects`` are the ids the loader may have seen twice (None: check every id); PostgreSQL tells
    which really repeat, so the loader's memory does not grow with the size of the extract.
    """
    if suspects is not None and not suspects:
        return
    stage = ident(sync_schema(schema), landed.stage_table)
    only = sql.SQL("AND id = ANY(%(ids)s)") if suspects is not None else sql.SQL("")
    duplicate_ids = [r[0] for r in cur.execute(
        sql.SQL("SELECT id FROM {stage} WHERE NOT {rejected} {only} GROUP BY id HAVING count(*) > 1").format(
            stage=stage, rejected=ident(REJECTED), only=only), {"ids": list(suspects or ())}).fetchall()]
    if not duplicate_ids:
        return
    if known is not None:
        place_carried_duplicates(cur, stage, duplicate_ids, known)
    cur.execute(
        sql.SQL(
            """
            WITH ranked AS (
                SELECT ctid AS rid, id, row_number() OVER (PARTITION BY id ORDER BY updated_time DESC, {ord} DESC) AS rn
                FROM {stage} WHERE id = ANY(%(ids)s) AND NOT {rejected}
            ), gone AS (
                DELETE FROM {stage} s USING ranked r WHERE s.ctid = r.rid AND r.rn > 1
                RETURNING s.*
            )
            SELECT id, to_jsonb(gone) - {ord_name} - {rejected_name} - {digest_name} FROM gone
            """
        ).format(stage=stage, ord=ident(ORDINAL), ord_name=sql.Literal(ORDINAL), rejected=ident(REJECTED),
                 rejected_name=sql.Literal(REJECTED), digest_name=sql.Literal(DIGEST)),
        {"ids": duplicate_ids},
    )
    dropped = cur.fetchall()
    landed.duplicates = len(dropped)
    landed.rows -= len(dropped)
    landed.rejected += len(dropped)
    reason = "{}: duplicate id in the extract; kept the occurrence with the latest updated_time"
    if record_rejects and dropped:
        insert_rejects(cur, schema, [(run_id, entity.name, rid, reason.format(entity.name), json.dumps(raw))
                                     for rid, raw in dropped])
    for rid, _ in dropped[: max(0, _SAMPLE - len(landed.reject_samples))]:
        landed.reject_samples.append(f"{rid}: duplicate id in the extract")


@contextlib.contextmanager
def _young_objects_only():
    """Keep the cyclic garbage collector off everything that existed before the landing.

    A landing makes a million short-lived rows, and every few thousand allocations the collector ran,
    now and then over the whole heap (in a Dagster run process, hundreds of thousands of objects):
    1 s to 2 s of a 1M-row landing. Rows are freed by reference counting anyway.

    Young garbage is collected first (0.2 ms): frozen, then unfrozen into the oldest generation, a cycle
    waiting to be collected (an httpx response, say, with the whole body it read) would stay until a full
    collection, dozens of landings later in a long-lived process (+21 MB per sync in ``bench/drift.py``).
    """
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def land_extract(
    conn: psycopg.Connection,
    schema: str,
    run_id: str,
    chunks: Iterable[bytes],
    entities: Iterable[str],
    mode: str,
    dry_run: bool = False,
) -> LandedExtract:
    """Stream ``chunks`` (the /sync/all body) into staging for ``entities``; one transaction."""
    wanted = {name: by_name(name) for name in entities}
    batch_id = uuid.uuid4().hex[:12]
    landed = {
        name: LandedEntity(name, stage_table_name(e, batch_id)) for name, e in wanted.items()
    }
    seen_arrays: set[str] = set()
    # An incremental extract is a delta, and a dry run keeps what it finds: neither takes a table over.
    carry = mode == "full" and not dry_run
    with _young_objects_only(), conn.transaction():
        with conn.cursor() as cur:
            for name, e in wanted.items():
                _create_stage(cur, schema, e, landed[name].stage_table)

        def on_array(entity: Entity, rows: ArrayReader) -> None:
            if entity.name not in wanted:
                return
            if entity.name in seen_arrays:
                raise ExtractError(f"the /sync/all body has the '{entity.extract_key}' array twice")
            seen_arrays.add(entity.name)
            le = landed[entity.name]
            # Taken over when its array starts, let go when it ends: one entity's digests in memory at a time.
            # An absent array takes nothing: its new table stays empty and the old batch stays as it was.
            k = take_over(conn, schema, entity, le.stage_table, batch_id) if carry else None
            loader = _EntityLoader(conn, schema, run_id, entity, le, record_rejects=not dry_run, known=k)
            try:
                loader.load(rows)
            except BaseException:
                if k is not None:
                    k.abandon()  # its queued statements must not outlive the transaction
                raise
            with conn.cursor() as cur:
                suspects = loader.seen.suspects
                if k is not None:
                    freed = k.finish(cur, suspects)
                    le.carried, le.ord_base = k.carried, k.base
                    # Every row it stages anew goes after the carried ones, wherever the extract lists it.
                    le.scattered = k.scattered + max(0, le.rows + le.rejected - k.carried)
                    suspects = loader.seen.carried_suspects(freed)
                _resolve_duplicates(cur, schema, run_id, entity, le, record_rejects=not dry_run,
                                    suspects=suspects, known=k)

        header: DocumentHeader = walk_extract(chunks, on_array)
        if not header.generated_at:
            raise ExtractError("the /sync/all body has no 'generated_at'; cannot tell how current it is")
        try:
            generated_at = parse_timestamp(header.generated_at)
        except ValueError:
            raise ExtractError(f"'generated_at' is not an RFC 3339 timestamp: {header.generated_at[:40]!r}") from None
        updated_since = None
        if header.updated_since:
            try:
                updated_since = parse_timestamp(header.updated_since)
            except ValueError:
                raise ExtractError(
                    f"'updated_since' is not an RFC 3339 timestamp: {header.updated_since[:40]!r}"
                ) from None
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (batch_id, entity, run_id, mode, dry_run, generated_at, updated_since, "
                    "stage_table, rows, rejected, unknown_fields, ord_base, scattered) VALUES (%s,%s,%s,%s,%s,%s,"
                    "%s,%s,%s,%s,%s::jsonb,%s,%s)"
                ).format(sync_table(schema, "landed_extracts")),
                [
                    (batch_id, le.entity, run_id, mode, dry_run, generated_at, updated_since, le.stage_table,
                     le.rows, le.rejected, json.dumps(le.unknown_fields), le.ord_base, le.scattered)
                    for le in landed.values()
                ],
            )
    return LandedExtract(batch_id, mode, dry_run, generated_at, updated_since, header.bytes_read, landed)


@dataclass(frozen=True)
class LandedRef:
    batch_id: str
    entity: str
    run_id: str
    mode: str
    dry_run: bool
    generated_at: datetime
    stage_table: str
    rows: int
    rejected: int
    applied_at: datetime | None


def find_landed(conn: psycopg.Connection, schema: str, entity: str, run_id: str) -> LandedRef | None:
    """The batch this run landed for ``entity``; else the newest one not yet applied."""
    row = conn.execute(
        sql.SQL(
            "SELECT batch_id, entity, run_id, mode, dry_run, generated_at, stage_table, rows, rejected, applied_at "
            "FROM {} WHERE entity = %(e)s AND (run_id = %(r)s OR (applied_at IS NULL AND NOT dry_run)) "
            "ORDER BY (run_id = %(r)s) DESC, landed_at DESC LIMIT 1"
        ).format(sync_table(schema, "landed_extracts")),
        {"e": entity, "r": run_id},
    ).fetchone()
    return LandedRef(*row) if row else None


def drop_stale_stages(conn: psycopg.Connection, schema: str, entity: str, keep: set[str]) -> int:
    """Drop staging tables of ``entity`` no longer needed.

    Kept: the batches in ``keep``, the newest full extract and the newest
    applied one (the drift checks compare against them), and unapplied batches
    younger than an hour (a run may still be about to apply them).
    """
    table = sync_table(schema, "landed_extracts")
    with conn.transaction():
        rows = conn.execute(
            sql.SQL(
                """
                SELECT batch_id, stage_table FROM {t} l
                WHERE entity = %(e)s AND NOT (batch_id = ANY(%(keep)s))
                  AND (applied_at IS NOT NULL OR dry_run OR landed_at < now() - interval '1 hour')
                  AND batch_id IS DISTINCT FROM (
                      SELECT batch_id FROM {t} WHERE entity = %(e)s AND mode = 'full' AND applied_at IS NOT NULL
                      AND NOT dry_run ORDER BY applied_at DESC LIMIT 1)
                  AND batch_id IS DISTINCT FROM (
                      SELECT batch_id FROM {t} WHERE entity = %(e)s AND mode = 'full' AND NOT dry_run
                      ORDER BY generated_at DESC LIMIT 1)
                """
            ).format(t=table),
            {"e": entity, "keep": list(keep)},
        ).fetchall()
        for batch_id, stage in rows:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(sync_schema(schema), stage)))
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE batch_id = %s AND entity = %s").format(table), (batch_id, entity)
            )
            untouched.forget(conn, schema, entity, batch_id)
    return len(rows)


ALL_ENTITIES = tuple(e.name for e in CATALOGUE)
