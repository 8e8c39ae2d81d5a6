"""The common case of row validation, compiled from the catalogue into one function per entity.

Checking a million rows field by field, through one Python closure per field, cost more than parsing
them (7.3 s of a 1M-row landing, against 2.5 s for the JSON itself). Here every field's check is
written inline into one generated function per entity. It accepts only rows that are certainly valid:
every catalogue field present and no other, ASCII text, timestamps in the plain UTC shape
``YYYY-MM-DDTHH:MM:SSZ``, integers as ints. It returns None for anything else, and the row then goes
through ``RowValidator.convert``, which decides and names the fault. So the fast path can only be
faster, never more lenient (``test_fastpath`` holds it to that), and the catalogue stays the one place
that says what a field is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from garden_pipeline.catalogue import Entity, Field, FieldType
from garden_pipeline.extract.timestamps import plain_utc_timestamp

_MISSING = object()


def _text(v: str, f: Field) -> str:
    """Condition under which a string field is certainly valid text (ASCII: no lone surrogates)."""
    parts = [f"type({v}) is str", f"{v}.isascii()", f"'\\x00' not in {v}"]
    if f.min_length is not None:
        parts.append(f"len({v}) >= {f.min_length}")
    if f.max_length is not None:
        parts.append(f"len({v}) <= {f.max_length}")
    return " and ".join(parts)


def _bounds(v: str, f: Field, lo: str | None = None, hi: str | None = None) -> list[str]:
    """Range conditions: the field's own bounds, else the given expressions (e.g. bigint's)."""
    lo = repr(f.minimum) if f.minimum is not None else lo
    hi = repr(f.maximum) if f.maximum is not None else hi
    return [c for c in (lo is not None and f"{v} >= {lo}", hi is not None and f"{v} <= {hi}") if c]


def _condition(v: str, f: Field, consts: dict[str, Any]) -> str:
    t = f.type
    if t in (FieldType.ID, FieldType.TEXT):
        return _text(v, f)
    if t is FieldType.ENUM:
        consts[f"_choices_{f.name}"] = frozenset(f.choices)
        return f"type({v}) is str and {v} in _choices_{f.name}"
    if t is FieldType.MONEY:
        return f"type({v}) is str and len({v}) <= 64 and _MONEY.match({v}) is not None"
    if t is FieldType.CURRENCY:
        return f"type({v}) is str and _CURRENCY.match({v}) is not None"
    if t is FieldType.TIMESTAMP:
        return f"type({v}) is str and _plain_utc({v})"
    if t is FieldType.INTEGER:
        return " and ".join([f"type({v}) is int", *_bounds(v, f, "-_BIGINT", "_BIGINT")])
    if t is FieldType.NUMBER:
        exact = " and ".join([f"type({v}) is int", *_bounds(v, f)])
        decimal = " and ".join([f"type({v}) is _Decimal", f"{v}.is_finite()", *_bounds(v, f)])
        return f"({exact}) or ({decimal})"
    if t is FieldType.URI:
        return f"{_text(v, f)} and _URI.match({v}) is not None"
    if t is FieldType.TEXT_ARRAY:
        return f"type({v}) is list and all(type(x) is str and x.isascii() and '\\x00' not in x for x in {v})"
    raise AssertionError(f"no fast check for {t}")  # pragma: no cover


def compile_fast_path(entity: Entity) -> Callable[[Any], tuple | None]:
    """``fast(row)``: the row's COPY values when it is certainly valid, else None (decide the slow way)."""
    # The same patterns as the thorough path's (imported here: validate.py imports this module).
    from garden_pipeline.extract.validate import BIGINT, CURRENCY_RE, MONEY_RE, URI_RE

    consts: dict[str, Any] = {"_MISSING": _MISSING, "_MONEY": MONEY_RE, "_CURRENCY": CURRENCY_RE, "_URI": URI_RE,
                              "_plain_utc": plain_utc_timestamp, "_Decimal": Decimal, "_dict": dict,
                              "_BIGINT": BIGINT}
    names = [f"v{i}" for i in range(len(entity.fields))]
    lines = [
        "def fast(row):",
        f"    if type(row) is not _dict or len(row) != {len(entity.fields)}:",
        "        return None",
        *(f"    {v} = row.get({f.name!r}, _MISSING)" for v, f in zip(names, entity.fields)),
    ]
    for v, f in zip(names, entity.fields):
        condition = _condition(v, f, consts)
        if f.nullable:
            condition = f"{v} is None or ({condition})"
        # _MISSING (an absent field, even an optional one: its absence is counted by the slow path)
        # fails every condition: it is no str, int, list, Decimal or None.
        lines += [f"    if not ({condition}):", "        return None"]
    lines.append(f"    return ({', '.join(names)},)")
    namespace = dict(consts)
    exec(compile("\n".join(lines), f"<fast path for {entity.name}>", "exec"), namespace)  # noqa: S102
    return namespace["fast"]
