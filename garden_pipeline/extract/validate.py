"""Row validation generated from the catalogue.

A row that passes is guaranteed to load into its typed GatewayDB column
(PostgreSQL would otherwise fail the whole COPY), so every check here is at
least as strict as PostgreSQL: no NUL characters or lone surrogates in text,
bigint range for integers, RFC 3339 with a time zone for timestamps.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from garden_pipeline.catalogue import Entity, Field, FieldType
from garden_pipeline.extract.fastpath import compile_fast_path
from garden_pipeline.extract.timestamps import PLAIN_TIMESTAMP, parse_timestamp, plain_utc_timestamp

__all__ = ["RowError", "RowValidator", "clean_text", "parse_timestamp", "validate_payload"]

MONEY_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")
BIGINT = 2**63 - 1


class RowError(ValueError):
    """A row that breaks the contract; the message names the field and what was wrong.

    ``kind`` feeds the schema-drift check: "type" (a known field arrived with another JSON type),
    "missing" (a required field is absent), "null", or "value" (right type, invalid value).
    """

    def __init__(self, field: str | None, message: str, kind: str = "value"):
        super().__init__(message)
        self.field = field
        self.kind = kind


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, Decimal, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def clean_text(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise RowError(f.name, f"field '{f.name}' must be a string, got {_describe(value)}", "type")
    if "\x00" in value:
        raise RowError(f.name, f"field '{f.name}' contains a NUL character, which PostgreSQL text cannot store")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RowError(f.name, f"field '{f.name}' contains invalid Unicode (a lone surrogate)") from None
    if f.min_length is not None and len(value) < f.min_length:
        raise RowError(f.name, f"field '{f.name}' must not be empty")
    if f.max_length is not None and len(value) > f.max_length:
        raise RowError(f.name, f"field '{f.name}' is {len(value)} characters long; at most {f.max_length} allowed")
    return value


def _check_range(f: Field, value) -> None:
    if f.minimum is not None and value < f.minimum:
        raise RowError(f.name, f"field '{f.name}' must be >= {f.minimum}, got {value}")
    if f.maximum is not None and value > f.maximum:
        raise RowError(f.name, f"field '{f.name}' must be <= {f.maximum}, got {value}")


def _converter(f: Field) -> Callable[[Any], Any]:
    t = f.type
    if t in (FieldType.ID, FieldType.TEXT):
        return lambda v: clean_text(f, v)
    if t is FieldType.ENUM:
        choices = frozenset(f.choices)

        def enum(v):
            if v not in choices or not isinstance(v, str):
                raise RowError(f.name, f"field '{f.name}' must be one of {', '.join(f.choices)}, got {v!r}"[:300])
            return v

        return enum
    if t is FieldType.MONEY:

        def money(v):
            if not isinstance(v, str):
                raise RowError(
                    f.name, f"field '{f.name}' must be a decimal string such as \"1500.00\", got {_describe(v)}", "type"
                )
            if len(v) > 64 or not MONEY_RE.match(v):
                raise RowError(f.name, f"field '{f.name}' is not a decimal money string: {v[:40]!r}")
            return v

        return money
    if t is FieldType.CURRENCY:

        def currency(v):
            if not isinstance(v, str) or not CURRENCY_RE.match(v):
                raise RowError(f.name, f"field '{f.name}' must be a three-letter upper-case currency code, got {v!r}"[:200])
            return v

        return currency
    if t is FieldType.TIMESTAMP:

        def timestamp(v):
            if not isinstance(v, str):
                raise RowError(f.name, f"field '{f.name}' must be an RFC 3339 timestamp string, got {_describe(v)}", "type")
            try:
                if plain_utc_timestamp(v):  # the cheapest test first
                    return v
                if PLAIN_TIMESTAMP.match(v):
                    parse_timestamp(v)  # the calendar and offset checks; the text names the same instant
                    return v
                return parse_timestamp(v)
            except ValueError as exc:
                raise RowError(f.name, f"field '{f.name}' is not a valid RFC 3339 timestamp ({exc}): {v[:40]!r}") from None

        return timestamp
    if t is FieldType.INTEGER:

        def integer(v):
            if isinstance(v, Decimal) and v == v.to_integral_value():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise RowError(f.name, f"field '{f.name}' must be an integer, got {_describe(v)}", "type")
            if abs(v) > BIGINT:
                raise RowError(f.name, f"field '{f.name}' is out of range for a 64-bit integer")
            _check_range(f, v)
            return v

        return integer
    if t is FieldType.NUMBER:

        def number(v):
            if isinstance(v, bool) or not isinstance(v, (int, Decimal, float)):
                raise RowError(f.name, f"field '{f.name}' must be a number, got {_describe(v)}", "type")
            if isinstance(v, float):
                v = Decimal(repr(v))
            if isinstance(v, Decimal) and not v.is_finite():
                raise RowError(f.name, f"field '{f.name}' must be a finite number")
            _check_range(f, v)
            return v

        return number
    if t is FieldType.URI:

        def uri(v):
            v = clean_text(f, v)
            if not URI_RE.match(v):
                raise RowError(f.name, f"field '{f.name}' must be an absolute URI, got {v[:60]!r}")
            return v

        return uri
    if t is FieldType.TEXT_ARRAY:

        def text_array(v):
            if not isinstance(v, list):
                raise RowError(f.name, f"field '{f.name}' must be an array of strings, got {_describe(v)}", "type")
            for item in v:
                clean_text(Field(f.name, FieldType.TEXT, min_length=None), item)
            return v

        return text_array
    raise AssertionError(f"no converter for {t}")  # pragma: no cover


@dataclass
class Validation:
    """Running totals for one entity's rows in one extract."""

    valid: int = 0
    rejected: int = 0
    unknown_fields: Counter = field(default_factory=Counter)
    rejected_by_field: Counter = field(default_factory=Counter)
    type_changes: Counter = field(default_factory=Counter)  # known field arrived with another JSON type
    missing_required: Counter = field(default_factory=Counter)
    absent_optional: Counter = field(default_factory=Counter)


class RowValidator:
    """Validates and converts one entity's rows into COPY-ready tuples (catalogue field order).

    Values are what text COPY needs, not necessarily Python types: a timestamp in the plain RFC 3339
    shape stays text, which names the same instant. Staging's binary COPY converts the rest
    (``gatewaydb/binary_copy.py``).
    """

    def __init__(self, entity: Entity):
        self.entity = entity
        self.known = frozenset(entity.field_names)
        self._plan = [(f.name, f.required, f.sql_nullable, _converter(f)) for f in entity.fields]
        self.fast = compile_fast_path(entity)  # for callers' own hot loops too (staging)
        self.stats = Validation()

    def convert(self, row: Any) -> tuple:
        """Return the row's values, or raise RowError naming the field at fault."""
        values = self.fast(row)
        if values is not None:
            return values  # certainly valid, every field present, none unknown: nothing to count
        return self._convert_thoroughly(row)

    def _convert_thoroughly(self, row: Any) -> tuple:
        """Field by field: decides every row, names the fault, counts absent and unknown fields."""
        if not isinstance(row, dict):
            raise RowError(None, f"{self.entity.name} row must be a JSON object, got {_describe(row)}", "type")
        out = []
        for name, required, nullable, conv in self._plan:
            if name in row:
                value = row[name]
                if value is None:
                    if not nullable:
                        raise RowError(name, f"field '{name}' must not be null", "null")
                    out.append(None)
                else:
                    out.append(conv(value))
            elif required:
                raise RowError(name, f"required field '{name}' is missing", "missing")
            else:
                self.stats.absent_optional[name] += 1
                out.append(None)
        if len(row) > len(out) or not self.known.issuperset(row):
            extra = [k for k in row if k not in self.known]
            self.stats.unknown_fields.update(extra)
        return tuple(out)

    def __call__(self, row: Any) -> tuple[tuple | None, str | None]:
        try:
            values = self.convert(row)
        except RowError as exc:
            self.stats.rejected += 1
            self.stats.rejected_by_field[exc.field or "<row>"] += 1
            if exc.kind == "type":
                self.stats.type_changes[exc.field or "<row>"] += 1
            elif exc.kind == "missing":
                self.stats.missing_required[exc.field] += 1
            return None, str(exc)
        self.stats.valid += 1
        return values, None


def validate_payload(entity: Entity, payload: Any) -> tuple:
    """Validate one entity object (an event payload); raises RowError."""
    return RowValidator(entity).convert(payload)
