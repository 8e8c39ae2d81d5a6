"""The common case of landing, a run of rows at a time: decoded and validated in one C call by msgspec.

Row by row, a 1M-row extract spent about 2 s in Python decoding and checking rows that were valid
anyway. Here each entity gets a msgspec decoder, built from the catalogue, whose types say exactly
what the thorough validator (``validate.RowValidator``) says, so a run of a few hundred rows is
decoded, checked and converted at once. The decoder only accepts; it never judges. If anything in a
run is unusual (an invalid row, an absent optional field, an unknown field, a value whose form the two
would read differently), the whole run is declined and its rows go the row-by-row way, which decides
each one and names the fault. So this path can be faster, never more lenient: ``test_runs`` holds it to
giving exactly the thorough path's values.

Where msgspec reads a value differently from the thorough path, the run is declined too:

* a timestamp with an offset other than UTC's: msgspec takes offsets up to 23:59, PostgreSQL only up
  to 15:59 (checked on the decoded values: their time zone must be UTC's own object);
* ``+0000`` or ``-0000``, an offset without its colon, not RFC 3339 (msgspec reads it as UTC);
* a fraction of a second beyond microseconds: msgspec rounds half up, the thorough path truncates;
* an escaped NUL (``\\u0000``), which PostgreSQL text cannot hold.

The last three are searched for in the run's text. Each search starts with a literal, which the
regular expression engine finds at C speed (about 0.05 s per 200 MB each; one pattern with
alternatives was thirty times slower, as it stopped at every digit and dash).

An exact JSON number is taken raw and read as the thorough path reads it (msgspec's Decimal would also
take it from a string). A field type with no such reading would leave its entity without a run decoder.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Callable, Literal, Optional

import msgspec

from garden_pipeline.catalogue import Entity, Field, FieldType

_DECLINE = tuple(re.compile(p).search for p in (r"\\u0000", r"\+0000\"", r"-0000\"", r"\.[0-9]{7}"))


def _text(f: Field) -> Any:
    return Annotated[str, msgspec.Meta(min_length=f.min_length, max_length=f.max_length)]


def _type(f: Field) -> Any:
    """The msgspec type that accepts exactly what ``validate._converter(f)`` accepts (None: none does)."""
    from garden_pipeline.extract.validate import BIGINT, CURRENCY_RE, MONEY_RE, URI_RE

    t = f.type
    if t in (FieldType.ID, FieldType.TEXT):
        kind = _text(f)
    elif t is FieldType.ENUM:
        kind = Literal[tuple(f.choices)]
    elif t is FieldType.MONEY:
        kind = Annotated[str, msgspec.Meta(max_length=64, pattern=MONEY_RE.pattern)]
    elif t is FieldType.CURRENCY:
        kind = Annotated[str, msgspec.Meta(pattern=CURRENCY_RE.pattern)]
    elif t is FieldType.TIMESTAMP:
        kind = Annotated[datetime, msgspec.Meta(tz=True)]
    elif t is FieldType.INTEGER:
        lo = -BIGINT if f.minimum is None else max(-BIGINT, f.minimum)
        hi = BIGINT if f.maximum is None else min(BIGINT, f.maximum)
        kind = Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    elif t is FieldType.URI:
        kind = Annotated[str, msgspec.Meta(min_length=f.min_length, max_length=f.max_length,
                                           pattern=URI_RE.pattern)]
    elif t is FieldType.TEXT_ARRAY:
        kind = list[str]
    elif t is FieldType.NUMBER:
        return msgspec.Raw  # msgspec's Decimal would also take "0.5", a string: read by _number instead
    else:
        return None
    return Optional[kind] if f.nullable else kind


_BAD = object()


def _number(f: Field) -> Callable[[msgspec.Raw], Any]:
    """An exact JSON number as the thorough path reads it (int, or Decimal of its text), else _BAD."""
    lo, hi = f.minimum, f.maximum

    def number(raw: msgspec.Raw) -> Any:
        text = bytes(raw).decode()
        if text == "null":
            return None if f.nullable else _BAD
        if text[0] not in "-0123456789":
            return _BAD  # a string, boolean, array or object
        # The run is valid JSON already, so this is a JSON number literal.
        value = int(text) if text.lstrip("-").isdigit() else Decimal(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return _BAD
        return value

    return number


def compile_run_decoder(entity: Entity) -> Callable[[str], list[tuple] | None] | None:
    """``decode(text)``: the binary-COPY values of every row in ``text`` (elements, no brackets), or None.

    None also when the entity has a field type this path cannot check exactly (none, today).
    """
    types = [_type(f) for f in entity.fields]
    if any(t is None for t in types):
        return None
    # Every field required, even the optional ones: an absent field declines the run, so the
    # thorough path counts it (schema drift). Unknown fields decline it for the same reason.
    struct = msgspec.defstruct(f"{entity.name}_run", list(zip(entity.field_names, types)),
                               forbid_unknown_fields=True, gc=False)
    decoder = msgspec.json.Decoder(list[struct])
    checks = _DECLINE
    to_values = _compile_to_values(entity)

    def decode(text: str) -> list[tuple] | None:
        for check in checks:
            if check(text) is not None:
                return None
        try:
            rows = decoder.decode(f"[{text}]")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return to_values(rows)

    return decode


def _compile_to_values(entity: Entity) -> Callable[[list], list[tuple] | None]:
    """``to_values(rows)``: the rows as tuples of binary-COPY values (timestamps as datetimes, money and
    numbers as Decimal), or None if a timestamp is not in UTC or a number is not one the thorough path
    takes (one generated loop per entity)."""
    utc, converts, namespace = [], [], {"_UTC": timezone.utc, "_astuple": msgspec.structs.astuple, "_BAD": _BAD,
                                 "_Decimal": Decimal}
    for i, f in enumerate(entity.fields):
        if f.type is FieldType.TIMESTAMP:
            check = f"r.{f.name}.tzinfo is not _UTC"
            utc.append(f"(r.{f.name} is not None and {check})" if f.nullable else check)
        elif f.type is FieldType.NUMBER:
            namespace[f"_number_{i}"] = _number(f)
            converts += [f"        t[{i}] = _number_{i}(t[{i}])",
                         f"        if t[{i}] is _BAD:", "            return None"]
        elif f.type is FieldType.MONEY:  # checked as text by its pattern; numeric for binary COPY
            converts += [f"        t[{i}] = _Decimal(t[{i}])" if not f.nullable
                         else f"        t[{i}] = None if t[{i}] is None else _Decimal(t[{i}])"]
    lines = [
        "def to_values(rows):",
        "    out = []",
        "    append = out.append",
        "    for r in rows:",
        *([f"        if {' or '.join(utc)}:", "            return None"] if utc else []),
        *(["        t = list(_astuple(r))", *converts, "        append(tuple(t))"] if converts
          else ["        append(_astuple(r))"]),
        "    return out",
    ]
    exec(compile("\n".join(lines), f"<run values for {entity.name}>", "exec"), namespace)  # noqa: S102
    return namespace["to_values"]
