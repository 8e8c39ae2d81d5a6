"""The ``/sync/all`` body as a stream of byte chunks, with data faults applied on the way.

The document is written piece by piece (``{"generated_at":..., "projects":[...`` and
so on, in catalogue order), ``rows_per_chunk`` rows at a time, so a million-row
extract never exists in memory as a whole.
"""

from __future__ import annotations

import json
import zlib
from typing import Iterable, Iterator

from garden_pipeline.catalogue import CATALOGUE, Entity, FieldType
from garden_pipeline.simulator.faults import Fault
from garden_pipeline.simulator.generator import RECORD_TIMES
from garden_pipeline.simulator.view import StateView

ROWS_PER_CHUNK = 1000
_encode = json.JSONEncoder(separators=(",", ":")).encode


def extract_chunks(
    view: StateView,
    generated_at: str,
    updated_since: str | None,
    faults: Iterable[Fault] = (),
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[bytes]:
    """Yield the extract document in chunks; ``updated_since`` is the raw (validated) echo."""
    faults = list(faults)
    empty = any(f.kind == "empty" for f in faults)
    header = {"generated_at": generated_at, "updated_since": updated_since}
    yield _encode(header)[:-1].encode()  # leave the object open
    for entity in CATALOGUE:
        yield f',"{entity.extract_key}":['.encode()
        if not empty:
            rows = view.rows(entity.name, updated_since)
            first = True
            for batch in _batches(_with_row_faults(entity, rows, faults), rows_per_chunk):
                body = _encode(batch)[1:-1]  # one encoder call per batch, brackets dropped
                yield (body if first else "," + body).encode()
                first = False
        yield b"]"
    if any(f.kind == "invalid_json" for f in faults):
        # Broken at the very end: a client that streams must still notice and not commit.
        yield b',"truncated_field":}'
    else:
        yield b"}"


def _batches(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _for(entity: Entity, faults: list[Fault], kind: str) -> list[Fault]:
    return [f for f in faults if f.kind == kind and f.params.get("entity") in (entity.name, None)]


def _with_row_faults(entity: Entity, rows: Iterator[dict], faults: list[Fault]) -> Iterator[dict]:
    drops = [f.params["fraction"] for f in _for(entity, faults, "drop_fraction")]
    extras = [f.params["fields"] for f in _for(entity, faults, "extra_fields")]
    invalid = [(f.params["error"], f.params["count"]) for f in _for(entity, faults, "invalid_rows")]
    duplicates = max((f.params["count"] for f in _for(entity, faults, "duplicate_ids")), default=0)
    if not (drops or extras or invalid or duplicates):
        yield from rows
        return
    served = 0
    repeat: list[dict] = []
    for row in rows:
        if drops and _unit_hash(row["id"]) < max(drops):
            continue  # by id hash, so the same rows go missing on every request
        for fields in extras:
            row.update(fields)
        for error, count in invalid:
            if served < count:
                corrupt(entity, row, error, served)
        if len(repeat) < duplicates:
            repeat.append(dict(row))
        served += 1
        yield row
    yield from repeat  # the same ids again at the end of the array


def _unit_hash(entity_id: str) -> float:
    return zlib.crc32(entity_id.encode()) / 2**32


def _first(entity: Entity, *types: FieldType, parents: bool = False):
    for field in entity.fields:
        if field.name == "id" or field.name in RECORD_TIMES:
            continue
        if (field.name in entity.parents) != parents:
            continue
        if not types or field.type in types:
            return field
    return None


def corrupt(entity: Entity, row: dict, error: str, n: int = 0) -> None:
    """Make ``row`` invalid in the way ``error`` names (INVALID_ROW_KINDS)."""
    if error == "missing_field":
        field = next((f for f in entity.fields if f.required and f.name != "id" and f.name not in RECORD_TIMES), None)
        row.pop(field.name if field else "updated_time", None)
    elif error == "wrong_type":
        field = _first(entity, FieldType.INTEGER, FieldType.NUMBER) or _first(entity)
        if field is None:
            row["created_time"] = 12345
        elif field.type in (FieldType.INTEGER, FieldType.NUMBER):
            row[field.name] = "not-a-number"
        else:
            row[field.name] = 12345
    elif error == "bad_money":
        field = _first(entity, FieldType.MONEY)
        row[field.name] = "1.500,00 EUR"
    elif error == "dangling_parent":
        field = _first(entity, parents=True)
        row[field.name] = f"{entity.parents[field.name]}-missing-{n + 1}"
    else:
        raise ValueError(f"unknown invalid row kind {error!r}")
