"""Values for binary COPY into a staging table, whose columns have the entity's GatewayDB types.

Binary COPY, because the run decoder (``extract.runs``) hands over timestamps as datetimes: psycopg
writes a datetime in binary (microseconds since 2000) several times faster than as text, and
PostgreSQL then parses no text either. Binary COPY takes each column's exact Python type, so the
values the row-by-row validator leaves as text (a plain timestamp, a money string) are converted here.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

from psycopg.types.string import BytesBinaryDumper

from garden_pipeline.catalogue import Entity, FieldType
from garden_pipeline.extract.timestamps import parse_timestamp


def copy_types(entity: Entity) -> list[str]:
    """The PostgreSQL type of each field, in catalogue order (for ``Copy.set_types``)."""
    return [f.type.sql_type for f in entity.fields]


def with_fast_bytea(cursor):
    """``cursor``, dumping ``bytes`` into a ``bytea`` column with psycopg's C dumper.

    ``Copy.set_types`` picks dumpers by type oid, and for bytea that is the pure-Python dumper
    psycopg's DB-API module registers for its ``Binary`` wrapper: a Python call per value, 0.2 s of
    the row digests at 1M rows. Registered on this cursor only.
    """
    cursor.adapters.register_dumper(bytes, BytesBinaryDumper)
    return cursor


def _timestamp(v: Any) -> datetime:
    return v if isinstance(v, datetime) else parse_timestamp(v)


def _numeric(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(v)  # a money string or an int: exact either way


_CONVERT = {FieldType.TIMESTAMP: _timestamp, FieldType.MONEY: _numeric, FieldType.NUMBER: _numeric}


def binary_converter(entity: Entity) -> Callable[[tuple], tuple] | None:
    """``convert(values)``: the row-by-row validator's values ready for binary COPY (None: nothing to do)."""
    plan = [(i, _CONVERT[f.type]) for i, f in enumerate(entity.fields) if f.type in _CONVERT]
    if not plan:
        return None

    def convert(values: tuple) -> tuple:
        out = list(values)
        for i, fn in plan:
            if out[i] is not None:
                out[i] = fn(out[i])
        return tuple(out)

    return convert
