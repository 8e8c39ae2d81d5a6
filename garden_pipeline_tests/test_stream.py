"""The streaming parser against the standard library's whole-document parse, at every chunk boundary."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garden_pipeline.catalogue import by_extract_key
from garden_pipeline.extract.stream import ExtractError, _find_array_end, walk_extract

DOC = (
    '{ "generated_at" : "2025-01-01T00:00:00Z",\n "x_meta": {"nested": [1, {"a": "]},{"}], "n": -12.5e3},'
    ' "projects": [ {"id": "p1", "project_name": "caf\\u00e9 \u00e9\u4e2d\U0001F600", "n": 12345678901234567890},'
    '\n\t{"id": "p2", "q": "\\"},{\\"", "f": 0.80, "t": true, "z": null, "e": []} ],'
    ' "models": null, "limits": [], "extra_list": [[1, 2], {"k": "v"}, "s", 3],'
    ' "budgets": [{"id": "b1", "alert_threshold": 1E-2, "amount": 1500}], "updated_since": null }\n'
).encode()


def _walk(chunks):
    seen = {}

    def on_array(entity, rows):
        seen[entity.extract_key] = list(rows)

    header = walk_extract(chunks, on_array)
    return header, seen


def test_same_rows_and_types_as_a_whole_document_parse_at_every_chunk_size():
    whole = json.loads(DOC, parse_float=Decimal)
    expected = {k: v for k, v in whole.items() if by_extract_key(k) and v is not None}
    for size in range(1, 40):
        header, seen = _walk([DOC[i:i + size] for i in range(0, len(DOC), size)])
        assert seen == expected, size
        assert header.generated_at == "2025-01-01T00:00:00Z" and header.updated_since is None
        assert header.bytes_read == len(DOC)
    assert isinstance(seen["projects"][1]["f"], Decimal) and str(seen["projects"][1]["f"]) == "0.80"
    assert seen["projects"][0]["n"] == 12345678901234567890


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_every_truncation_is_reported_as_cut_off(size):
    end = DOC.rstrip().rindex(b"}")
    for cut in range(end):
        body = DOC[:cut]
        with pytest.raises(ExtractError, match="cut off"):
            _walk([body[i:i + size] for i in range(0, len(body), size)])


@pytest.mark.parametrize(
    "body,words",
    [
        (b'{"generated_at": "x", "projects": [{"id": "p"} {"id": "q"}]}', "expected ',' or ']'"),
        (b'{"generated_at": "x", "projects": [{"id": NaN}]}', "NaN is not a JSON value"),
        (b'{"generated_at": "x", "projects": [{"id": "a\x01"}]}', "not valid JSON"),
        (b'{"generated_at": "x", "projects": [{"id": "\xff"}]}', "invalid UTF-8"),
        (b'{"generated_at": "x", 12: 1}', "expected a key"),
        (b'{"generated_at": "x"} {}', "data after the top-level object"),
        (b'{"generated_at": 12}', "must be a string"),
    ],
)
def test_invalid_documents_name_what_was_wrong(body, words):
    for size in (1, 5, len(body)):
        with pytest.raises(ExtractError, match=words):
            _walk([body[i:i + size] for i in range(0, len(body), size)])


def test_a_row_split_across_many_chunks_and_a_callback_that_stops_early():
    rows = [{"id": f"p{i}", "project_name": "x" * (i * 37 % 5000)} for i in range(300)]
    body = json.dumps({"generated_at": "g", "projects": rows, "models": [{"id": "m"}]}).encode()
    seen = {}

    def on_array(entity, it):
        seen[entity.extract_key] = [next(it)]  # the rest must be skipped, not mistaken for keys

    walk_extract([body[i:i + 1000] for i in range(0, len(body), 1000)], on_array)
    assert seen == {"projects": [rows[0]], "models": [{"id": "m"}]}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",a1\n', max_size=24))
def test_the_array_end_search_finds_what_a_plain_search_for_the_pair_finds(text):
    for pos in range(len(text) + 1):
        for limit in range(pos, len(text) + 1):
            assert _find_array_end(text, pos, limit) == text.find("}]", pos, limit), (pos, limit)
