"""Property: whatever the order, duplication and batching of events, GatewayDB ends equal to Model Garden."""

from __future__ import annotations

import copy
import random
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garden_pipeline.catalogue import CATALOGUE
from garden_pipeline.events import inbox
from garden_pipeline.events.envelope import validate_event
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import connect
from garden_pipeline.simulator import ModelGardenState
from garden_pipeline_tests.events_harness import apply
from garden_pipeline_tests.harness import assert_db_equals_state


def _initial_events(state: ModelGardenState) -> list[dict]:
    """The starting state as CREATED events stamped with each row's updated_time."""
    ids = count()
    out = []
    for entity in CATALOGUE:
        for row in state.snapshot()[entity.name].values():
            out.append({"event_id": f"init-{next(ids)}", "event_type": "CREATED", "entity_type": entity.name,
                        "entity_id": row["id"], "timestamp": row["updated_time"], "version": "1.0", "payload": row})
    return out


@pytest.fixture
def clean_schema(pg_url, schema):
    migrate.upgrade(pg_url, schema)
    tables = [f'"{schema}"."{e.table}"' for e in CATALOGUE] + [
        f'"{schema}_sync".{t}' for t in ("inbox", "tombstones", "run_counts")]

    def reset():
        with connect(pg_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(tables)}")

    return reset


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31),
    changes=st.integers(0, 40),
    batches=st.integers(1, 6),
    duplicate_share=st.floats(0, 0.5),
    strip_event_ids=st.booleans(),
)
def test_shuffled_duplicated_batched_events_converge(pg_url, schema, db, clean_schema, seed, changes, batches,
                                                     duplicate_share, strip_event_ids):
    clean_schema()
    state = ModelGardenState(scale=40, seed=seed % 1000)
    history = _initial_events(state) + state.mutate(changes, rng_seed=seed)
    rng = random.Random(seed)
    deliveries = history + [copy.deepcopy(rng.choice(history)) for _ in range(int(len(history) * duplicate_share))]
    if strip_event_ids:  # the natural key must deduplicate too
        for e in deliveries:
            e.pop("event_id", None)
    rng.shuffle(deliveries)
    cuts = sorted(rng.sample(range(1, len(deliveries)), min(batches - 1, len(deliveries) - 1)))
    chunks = [deliveries[a:b] for a, b in zip([0, *cuts], [*cuts, len(deliveries)])]
    for chunk in chunks:
        with connect(pg_url, autocommit=True) as conn:
            inbox.store(conn, schema, [validate_event(e) for e in chunk])
        apply(pg_url, schema)
    apply(pg_url, schema)  # a later batch retries whatever is still parked

    assert_db_equals_state(db, schema, state.snapshot())
    open_rows = db.execute(
        f"SELECT count(*) FROM \"{schema}_sync\".inbox WHERE state NOT IN ('applied', 'stale', 'duplicate')"
    ).fetchone()[0]
    assert open_rows == 0, "every event settles once its parent has arrived"
