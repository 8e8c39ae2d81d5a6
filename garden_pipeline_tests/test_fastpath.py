"""The compiled fast path of row validation is never more lenient than the thorough path.

For rows from the simulator and for every field of them replaced by each awkward value below, the fast
path either declines (None) or returns exactly what RowValidator's thorough path returns; and on the
plain rows Model Garden sends it must not decline, or it would be no faster.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal

import pytest

from garden_pipeline.catalogue import CATALOGUE
from garden_pipeline.extract.fastpath import compile_fast_path
from garden_pipeline.extract.validate import RowError, RowValidator
from garden_pipeline.simulator.dataset import ModelGardenState

AWKWARD = [
    None, "", " ", "x", "\x00", "caf\u00e9", "\ud800", "A" * 129, "USD", "usd", "US", "1500.00", "-0.5", "1e3",
    "1500.00\n", "0", 0, 1, -1, True, False, 2**63 - 1, 2**63, -(2**63), Decimal("0.8"), Decimal("1.5"),
    Decimal("NaN"), Decimal("Infinity"), Decimal("2"), 0.5, [], ["chat"], ["chat", 1], ["\x00"], {}, {"a": 1},
    "2025-07-15T14:00:00Z", "2025-02-30T14:00:00Z", "2025-07-15T24:00:00Z", "2025-07-15T14:00:60Z",
    "2025-W01-1T14:00:00Z", "2025-07-15T14:00:00+00:00", "2025-07-15t14:00:00z", "2025-07-15T14:00:00.5Z",
    "\u0662025-07-15T14:00:00Z", "https://x.example/v1", "not a uri", "active", "ga", "monthly", "inactive",
]


def _thorough(validator: RowValidator, row):
    try:
        return validator._convert_thoroughly(row)
    except RowError:
        return None


@pytest.mark.parametrize("entity", CATALOGUE, ids=lambda e: e.name)
def test_fast_path_agrees_with_the_thorough_path(entity):
    state = ModelGardenState(scale=300, seed=3)
    # As the extract parser hands them over: numbers with a fraction as Decimal.
    rows = [json.loads(json.dumps(r), parse_float=Decimal) for r in itertools.islice(state.rows(entity.name), 20)]
    fast = compile_fast_path(entity)
    validator = RowValidator(entity)
    assert rows
    for row in rows:
        assert fast(row) is not None, row  # the plain case is the fast case
        assert fast(row) == _thorough(validator, row)
        variants = [{k: v for k, v in row.items() if k != name} for name in row]  # each field missing
        variants += [{**row, "extra": 1}, [row], "row"]
        variants += [{**row, name: value} for name in row for value in AWKWARD]
        for variant in variants:
            got = fast(variant)
            if got is not None:
                assert got == _thorough(validator, variant), variant


def test_rows_the_fast_path_declines_are_still_validated_and_counted():
    entity = next(e for e in CATALOGUE if e.name == "model")
    row = next(ModelGardenState(scale=300, seed=3).rows("model"))
    validator = RowValidator(entity)
    assert validator({**row, "tier": "gold"})[1] is None
    assert validator({**row, "model_name": "caf\u00e9"})[0][1] == "caf\u00e9"
    assert "must not be empty" in validator({**row, "model_name": ""})[1]
    assert validator.stats.valid == 2 and validator.stats.rejected == 1
    assert validator.stats.unknown_fields == {"tier": 1}
