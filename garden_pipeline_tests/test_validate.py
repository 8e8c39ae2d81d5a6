"""Row validation: every contract rule gives a reason that names the field."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from garden_pipeline.catalogue import by_extract_key, by_name
from garden_pipeline.extract.stream import ExtractError, walk_extract
from garden_pipeline.extract.validate import RowError, RowValidator, parse_timestamp

EXAMPLE = Path(__file__).resolve().parents[2] / "shared" / "contract" / "examples" / "sync_all.json"

MODEL = {
    "id": "mdl-1", "model_name": "gpt", "provider": "openai", "model_family": "gpt", "model_version": None,
    "capabilities": ["chat"], "context_window": 128000, "max_output_tokens": 16384, "status": "ga",
    "created_time": "2025-07-15T14:00:00Z", "updated_time": "2025-07-15T14:00:00.123456+02:00",
}
BUDGET = {
    "id": "bud-1", "use_case_id": "uc-1", "budget_amount": "1500.00", "currency": "USD", "period": "monthly",
    "alert_threshold": Decimal("0.8"), "created_time": "2025-07-15T14:00:00Z", "updated_time": "2025-07-15T14:00:00Z",
}


def _convert(entity: str, row: dict) -> tuple:
    return RowValidator(by_name(entity)).convert(row)


def test_valid_rows_convert_in_catalogue_order():
    values = _convert("model", MODEL)
    assert values[0] == "mdl-1" and values[5] == ["chat"]
    # The plain RFC 3339 shape goes to COPY as the original text; any other accepted shape as a datetime.
    assert values[-1] == "2025-07-15T14:00:00.123456+02:00"
    odd = _convert("model", {**MODEL, "updated_time": "2025-07-15t14:00:00.1234567+02:00"})
    assert odd[-1] == datetime(2025, 7, 15, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert _convert("use_case_budget", BUDGET)[2] == "1500.00"


@pytest.mark.parametrize(
    "entity,base,change,field,words",
    [
        ("model", MODEL, {"context_window": "128000"}, "context_window", "must be an integer"),
        ("model", MODEL, {"context_window": True}, "context_window", "must be an integer"),
        ("model", MODEL, {"context_window": 0}, "context_window", ">= 1"),
        ("model", MODEL, {"context_window": 2**70}, "context_window", "64-bit"),
        ("model", MODEL, {"status": "beta"}, "status", "one of ga, preview, deprecated"),
        ("model", MODEL, {"capabilities": "chat"}, "capabilities", "array of strings"),
        ("model", MODEL, {"capabilities": ["a\x00b"]}, "capabilities", "NUL"),
        ("model", MODEL, {"model_name": ""}, "model_name", "must not be empty"),
        ("model", MODEL, {"model_name": "bad\ud800"}, "model_name", "invalid Unicode"),
        ("model", MODEL, {"provider": None}, "provider", "must not be null"),
        ("model", MODEL, {"id": "x" * 129}, "id", "at most 128"),
        ("model", MODEL, {"updated_time": "2025-07-15 14:00"}, "updated_time", "RFC 3339"),
        ("model", MODEL, {"updated_time": "2025-07-15T14:00:00"}, "updated_time", "RFC 3339"),
        ("model", MODEL, {"created_time": "2025-13-15T14:00:00Z"}, "created_time", "RFC 3339"),
        ("use_case_budget", BUDGET, {"budget_amount": 1500.0}, "budget_amount", "decimal string"),
        ("use_case_budget", BUDGET, {"budget_amount": "1,500.00"}, "budget_amount", "money"),
        ("use_case_budget", BUDGET, {"currency": "usd"}, "currency", "currency code"),
        ("use_case_budget", BUDGET, {"alert_threshold": Decimal("1.5")}, "alert_threshold", "<= 1"),
    ],
)
def test_invalid_values_name_the_field(entity, base, change, field, words):
    with pytest.raises(RowError) as err:
        _convert(entity, {**base, **change})
    assert err.value.field == field
    assert field in str(err.value) and words in str(err.value)


def test_missing_required_field_and_non_object_rows():
    row = dict(MODEL)
    del row["model_family"]
    with pytest.raises(RowError, match="required field 'model_family' is missing"):
        _convert("model", row)
    with pytest.raises(RowError, match="must be a JSON object"):
        _convert("model", ["not", "a", "row"])


def test_optional_fields_may_be_absent_and_unknown_fields_are_counted():
    v = RowValidator(by_name("model"))
    row = {k: val for k, val in MODEL.items() if k not in ("model_version", "max_output_tokens")}
    values, reason = v({**row, "tier": "gold"})
    assert reason is None and values[4] is None
    assert v.stats.unknown_fields == {"tier": 1}


def test_parse_timestamp_accepts_rfc3339_forms():
    assert parse_timestamp("2025-07-15T14:00:00Z") == datetime(2025, 7, 15, 14, tzinfo=timezone.utc)
    assert parse_timestamp("2025-07-15t14:00:00.123456789z").microsecond == 123456


@pytest.mark.skipif(not EXAMPLE.exists(), reason="contract examples not beside this checkout")
def test_the_contract_example_extract_is_valid_and_streams():
    body = EXAMPLE.read_bytes()
    seen = {}

    def on_array(entity, rows):
        v = RowValidator(entity)
        seen[entity.name] = [v(r)[1] for r in rows]

    header = walk_extract([body[i:i + 97] for i in range(0, len(body), 97)], on_array)
    assert header.generated_at == json.loads(body)["generated_at"]
    assert set(seen) == {by_extract_key(k).name for k in json.loads(body) if by_extract_key(k)}
    assert all(reason is None for reasons in seen.values() for reason in reasons)


@pytest.mark.parametrize(
    "body,words",
    [
        (b'{"generated_at": "2025-01-01T00:00:00Z", "projects": [{"id": "p"', "cut off"),
        (b'{"generated_at": "2025-01-01T00:00:00Z", "projects": [}', "not valid JSON"),
        (b'[1, 2]', "must be a JSON object"),
        (b'{"projects": {"id": "p"}}', "must be an array"),
        (b'', "cut off"),
    ],
)
def test_broken_documents_raise_extract_error(body, words):
    with pytest.raises(ExtractError, match=words):
        walk_extract([body], lambda entity, rows: list(rows))
