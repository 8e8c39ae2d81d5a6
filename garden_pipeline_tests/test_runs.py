"""Runs of rows decoded at once (msgspec) give exactly what row-by-row validation gives, or are declined.

Two halves: ``ArrayReader.runs`` hands over the same elements as reading one by one, however the body is
cut into chunks and whatever the text between the rows; and each entity's run decoder accepts only rows
the thorough validator accepts, with the same values, for simulator rows with every field replaced by
awkward values and for every timestamp form the two parsers might read differently.
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from decimal import Decimal

import msgspec
import pytest

from garden_pipeline.catalogue import CATALOGUE, FieldType, by_name
from garden_pipeline.extract import runs, stream
from garden_pipeline.extract.runs import compile_run_decoder
from garden_pipeline.extract.stream import ExtractError, walk_extract
from garden_pipeline.extract.validate import RowError, RowValidator
from garden_pipeline.gatewaydb.binary_copy import binary_converter
from garden_pipeline.simulator.dataset import ModelGardenState
from garden_pipeline_tests.test_fastpath import AWKWARD

# --- the reader: runs and single elements together are exactly the array --------------------------------


def _json_runs(text: str):
    """A run decoder that takes any valid JSON: isolates the reader's cutting from msgspec's checks."""
    try:
        return json.loads(f"[{text}]", parse_float=Decimal)
    except ValueError:
        return None


def _read(body: bytes, size: int, decode) -> tuple[dict, dict]:
    elements, taken = {}, {}

    def on_array(entity, rows):
        out = elements.setdefault(entity.extract_key, [])
        for decoded, items in rows.runs(decode):
            out.extend(items)
            taken[entity.extract_key] = taken.get(entity.extract_key, 0) + (len(items) if decoded else 0)

    walk_extract([body[i:i + size] for i in range(0, len(body), size)], on_array)
    return elements, taken


ROWS = [{"id": f"p{i}", "name": "a},{b" if i % 7 == 0 else "x" * (i % 13), "n": i, "f": Decimal("0.80")}
        for i in range(60)]
BODIES = [
    json.dumps({"generated_at": "2025-01-01T00:00:00Z", "projects": ROWS, "limits": ROWS[:3]}, default=str),
    json.dumps({"projects": ROWS, "generated_at": "x"}, indent=2, default=str),  # whitespace between rows
    '{"projects": [{"id": "a"},{"id": "}]"},{"id": "b"}],"limits":[{"id":"c"},{"id":"d"}],"generated_at":"x"}',
    '{"projects": [{"id": "a"},{"id": "b}]c"}],"limits":[{"id":"}]"}],"generated_at":"x"}',  # ... in the last one
]


@pytest.mark.parametrize("body", BODIES, ids=["compact", "indented", "brackets-in-strings", "brackets-in-last"])
@pytest.mark.parametrize("run_chars", [8, 40, 300, 1 << 16])
def test_runs_and_single_elements_together_are_the_whole_array(monkeypatch, body, run_chars):
    monkeypatch.setattr(stream, "RUN_CHARS", run_chars)
    whole = json.loads(body, parse_float=Decimal)
    expected = {k: v for k, v in whole.items() if isinstance(v, list)}
    for size in (1, 5, 64, len(body)):
        got, taken = _read(body.encode(), size, _json_runs)
        assert got == expected, (size, run_chars)
        if run_chars >= 300 and "indent" not in body[:20]:
            assert taken.get("projects", 0) > 0  # runs were really taken, not only single elements
        declined, _ = _read(body.encode(), size, lambda text: None)
        assert declined == expected


def test_the_last_element_comes_in_a_run_too(monkeypatch):
    # Landed one by one it would get no digest, and be landed again by every sync (carry_over).
    monkeypatch.setattr(stream, "RUN_CHARS", 1 << 16)
    body = BODIES[0].encode()
    for size in (7, 64, len(body)):
        _, taken = _read(body, size, _json_runs)
        assert taken == {"projects": len(ROWS), "limits": 3}, size


@pytest.mark.parametrize("run_chars", [8, 64])
def test_a_cut_off_or_invalid_body_is_reported_as_without_runs(monkeypatch, run_chars):
    monkeypatch.setattr(stream, "RUN_CHARS", run_chars)
    body = BODIES[0].encode()
    for cut in range(0, len(body) - 1, 7):
        with pytest.raises(ExtractError, match="cut off"):
            _read(body[:cut], 13, _json_runs)
    broken = body.replace(b'"p30"', b'"p30" "x"')
    with pytest.raises(ExtractError, match="not valid JSON"):
        _read(broken, 13, _json_runs)


# --- the decoders: never more lenient than the thorough validator ---------------------------------------

RUN_ENTITIES = [e for e in CATALOGUE if compile_run_decoder(e) is not None]

TIMESTAMPS = [f"{d}{s}{t}{z}" for d, s, t, z in itertools.product(
    ["2025-07-15", "2024-02-29", "2025-02-29", "0001-01-01", "9999-12-31", "0000-01-01", "2025-13-01", "2025-7-15"],
    ["T", "t", " ", ""],
    ["14:00:00", "23:59:59", "24:00:00", "14:00:60", "14:00", "14:00:00.5", "14:00:00.123456", "14:00:00.1234567",
     "14:00:00.9999999", "14:00:00."],
    ["Z", "z", "", "+00:00", "-00:00", "+0000", "-0000", "+00", "+05:30", "-05:30", "+15:59", "+16:00", "+23:59",
     "+24:00", " Z"],
)]


_ENCODE = msgspec.json.Encoder(decimal_format="number").encode  # Decimal as a JSON number, as Model Garden sends


def _text(row) -> str | None:
    """The row as JSON text, or None where it cannot be valid JSON (NaN, Infinity)."""
    try:
        text = _ENCODE(row).decode()
    except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
        text = json.dumps(row, default=float)  # both paths read this same text, whatever its digits
    try:
        json.loads(text, parse_constant=lambda name: 1 / 0)
    except ZeroDivisionError:
        return None
    return text


def _thorough(entity, text: str):
    """What the row-by-row path makes of this text: values for binary COPY, or None (rejected)."""
    row = json.loads(text, parse_float=Decimal)
    try:
        values = RowValidator(entity)._convert_thoroughly(row)
    except RowError:
        return None
    return binary_converter(entity)(values)


def _as_run(entity, texts: list[str]):
    return compile_run_decoder(entity)(",".join(texts))


def _plain_rows(entity, n=20):
    state = ModelGardenState(scale=300, seed=3)
    return [json.loads(json.dumps(r), parse_float=Decimal) for r in itertools.islice(state.rows(entity.name), n)]


@pytest.mark.parametrize("entity", RUN_ENTITIES, ids=lambda e: e.name)
def test_run_decoder_agrees_with_the_thorough_path(entity):
    rows = _plain_rows(entity)
    texts = [_text(r) for r in rows]
    assert _as_run(entity, texts) == [_thorough(entity, t) for t in texts]  # the plain case is taken, exactly
    timestamp_fields = [f.name for f in entity.fields if f.type is FieldType.TIMESTAMP]
    variants = [{k: v for k, v in rows[0].items() if k != name} for name in rows[0]]  # each field missing
    variants += [{**rows[0], "extra": 1}, [rows[0]], "row"]
    variants += [{**rows[0], name: value} for name in rows[0] for value in AWKWARD]
    variants += [{**rows[0], name: value} for name in timestamp_fields for value in TIMESTAMPS]
    taken = 0
    for variant in variants:
        text = _text(variant)
        if text is None:
            continue
        got = _as_run(entity, [texts[0], text, texts[-1]])
        if got is not None:
            taken += 1
            assert got[1] == _thorough(entity, text), text
    assert taken > len(timestamp_fields) * 10  # awkward but valid values are taken too


@pytest.mark.parametrize("field,value", [
    ("use_case_id", "a\x00b"), ("created_time", "2025-07-15T14:00:00+0000"), ("created_time", "2025-07-15T14:00:00-0000"),
    ("created_time", "2025-07-15T14:00:00.1234567Z"), ("created_time", "2025-07-15T14:00:00.9999999Z"),
])
def test_forms_msgspec_reads_otherwise_are_declined_by_their_text(monkeypatch, field, value):
    entity = by_name("subscription")
    text = _text({**_plain_rows(entity, 1)[0], field: value})
    assert compile_run_decoder(entity)(text) is None
    monkeypatch.setattr(runs, "_DECLINE", ())
    # Without the text search msgspec takes it, and not as the thorough path does (rejects or truncates):
    assert _as_run(entity, [text])[0] != _thorough(entity, text)


@pytest.mark.parametrize("offset", ["+16:00", "+23:59", "+05:30", "-01:00"])
def test_timestamps_outside_utc_decline_the_run(offset):
    entity = by_name("llm_model_limit")
    text = _text({**_plain_rows(entity, 1)[0], "updated_time": f"2025-07-15T14:00:00{offset}"})
    assert compile_run_decoder(entity)(text) is None


def test_non_ascii_text_is_taken():
    entity = by_name("project")
    row = {**_plain_rows(entity, 1)[0], "project_name": "caf\u00e9 \u4e2d"}
    assert _as_run(entity, [_text(row)]) == [_thorough(entity, _text(row))]
    assert _as_run(entity, [json.dumps(row, ensure_ascii=False)])[0][1] == "caf\u00e9 \u4e2d"


def test_every_entity_has_a_run_decoder():
    assert {e.name for e in RUN_ENTITIES} == {e.name for e in CATALOGUE}


@pytest.mark.parametrize("literal,taken", [
    ("0.80", True), ("1", True), ("0", True), ("-0", True), ("1E-2", True), ("1e0", True), ("0.5000", True),
    ('"0.5"', False), ("true", False), ("null", False), ("1.5", False), ("-0.1", False), ("1e999", False),
    ("[0.5]", False), ('{"a": 1}', False),
])
def test_exact_numbers_read_as_the_thorough_path_reads_them(literal, taken):
    # msgspec's own Decimal would take the string "0.5"; the thorough path and so the run path do not.
    entity = by_name("use_case_budget")
    text = _text(_plain_rows(entity, 1)[0])
    text = re.sub(r'"alert_threshold":[^,}]*', f'"alert_threshold":{literal}', text)
    got = _as_run(entity, [text])
    assert (got is not None) == taken
    if taken:
        assert got == [_thorough(entity, text)]
        assert str(got[0][5]) == str(_thorough(entity, text)[5])  # the same digits, not only the same value


def test_values_are_ready_for_binary_copy():
    entity = by_name("llm_model_pricing")
    values = _as_run(entity, [_text(r) for r in _plain_rows(entity, 3)])
    types = {f.type: v for f, v in zip(entity.fields, values[0])}
    assert isinstance(types[FieldType.TIMESTAMP], datetime) and isinstance(types[FieldType.MONEY], Decimal)


# --- landing: what runs skip (counting) is still counted, in real PostgreSQL ------------------------------


def test_landing_counts_and_rejects_exactly_with_runs_around_odd_rows(pg_url, schema, db):
    from garden_pipeline.gatewaydb import migrate
    from garden_pipeline.gatewaydb.connection import connect
    from garden_pipeline.gatewaydb.staging import land_extract
    from garden_pipeline.gatewaydb.tables import sync_schema

    migrate.upgrade(pg_url, schema)
    state = ModelGardenState(scale=20_000, seed=5)
    limits = [json.loads(json.dumps(r)) for r in state.rows("llm_model_limit")]
    assert len(limits) > 2000  # several runs of 64 KiB
    odd = {100: ("tier", "gold"), 900: ("tokens_per_day", None), 1500: ("requests_per_minute", -1),
           1501: ("created_time", "2025-07-15T14:00:00+16:00"), 1800: ("created_time", "2025-07-15T14:00:00.5+02:00")}
    for i, (name, value) in odd.items():
        if name == "tokens_per_day":
            limits[i].pop(name)
        else:
            limits[i][name] = value
    body = json.dumps({"generated_at": "2025-08-01T00:00:00Z", "limits": limits}).encode()
    with connect(pg_url) as conn:
        landed = land_extract(conn, schema, "runs", [body[i:i + 8192] for i in range(0, len(body), 8192)],
                              ["llm_model_limit"], mode="full")
    le = landed.entities["llm_model_limit"]
    assert (le.rows, le.rejected) == (len(limits) - 2, 2)
    assert le.unknown_fields == {"tier": 1} and le.absent_optional == {"tokens_per_day": 1}
    assert le.rejected_by_field == {"requests_per_minute": 1, "created_time": 1}
    stage = f'"{sync_schema(schema)}"."{le.stage_table}"'
    staged = dict(db.execute(f"SELECT id, created_time FROM {stage} WHERE NOT _rejected").fetchall())
    assert len(staged) == len(limits) - 2
    assert staged[limits[1800]["id"]] == datetime.fromisoformat("2025-07-15T12:00:00.5+00:00")
    assert staged[limits[7]["id"]] == datetime.fromisoformat(limits[7]["created_time"].replace("Z", "+00:00"))
    ordinals = [r[0] for r in db.execute(f"SELECT _ord FROM {stage} ORDER BY _ord")]
    assert ordinals == list(range(1, len(limits) + 1))  # every row in document order, runs or not


def test_rejects_written_between_copies_keep_every_row(monkeypatch, pg_url, schema, db):
    """Rejects are flushed by ending the COPY and starting another; no row is lost or doubled doing so."""
    from garden_pipeline.gatewaydb import migrate, staging
    from garden_pipeline.gatewaydb.connection import connect
    from garden_pipeline.gatewaydb.staging import land_extract
    from garden_pipeline.gatewaydb.tables import sync_schema

    monkeypatch.setattr(staging, "_REJECT_FLUSH", 3)
    migrate.upgrade(pg_url, schema)
    subs = [json.loads(json.dumps(r)) for r in ModelGardenState(scale=5_000, seed=2).rows("subscription")]
    bad = set(range(5, len(subs), 11))
    for i in bad:
        subs[i]["status"] = "unknown"
    body = json.dumps({"generated_at": "2025-08-01T00:00:00Z", "use_case_llm_models": subs}).encode()
    with connect(pg_url) as conn:
        landed = land_extract(conn, schema, "flush", [body], ["subscription"], mode="full")
    le = landed.entities["subscription"]
    assert (le.rows, le.rejected) == (len(subs) - len(bad), len(bad))
    recorded = db.execute(f'SELECT count(*) FROM "{sync_schema(schema)}".rejected_records WHERE run_id = %s',
                          ("flush",)).fetchone()[0]
    assert recorded == len(bad)
    stage = f'"{sync_schema(schema)}"."{le.stage_table}"'
    assert [r[0] for r in db.execute(f"SELECT _ord FROM {stage} ORDER BY _ord")] == list(range(1, len(subs) + 1))
