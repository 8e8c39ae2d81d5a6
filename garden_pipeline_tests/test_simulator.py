"""The Model Garden simulator: data, mutations, the /sync/all endpoint, faults, auth, signatures.

Everything HTTP goes over real sockets (SimulatorServer + httpx), as the pipeline sees it.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import tracemalloc
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from garden_pipeline.catalogue import CATALOGUE, by_name
from garden_pipeline.events.signature import HEADER, SignatureError, sign, verify
from garden_pipeline.simulator import (
    SYNC_PATH,
    EventPusher,
    Fault,
    FaultPlan,
    ModelGardenState,
    SimulatorServer,
)
from garden_pipeline.simulator.clock import format_timestamp, parse_timestamp

SCHEMA_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "contract" / "model-garden.schema.json"
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
EVENT_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SCALE = 300


# helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict:
    if not SCHEMA_PATH.exists():
        pytest.skip(f"contract schema not found at {SCHEMA_PATH} (shared/contract is not checked out next to the repo)")
    return json.loads(SCHEMA_PATH.read_text())


def validator(schema: dict, definition: str):
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator({**schema, "$ref": f"#/$defs/{definition}"}, format_checker=FormatChecker())


@pytest.fixture(scope="module")
def sim():
    """A read-mostly server shared by the HTTP tests that do not change data."""
    with SimulatorServer(scale=SCALE, seed=7) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_faults(request):
    if "sim" in request.fixturenames:
        sim = request.getfixturevalue("sim")
        sim.faults.clear()
        sim.faults.reset_log()
    yield


def get_extract(url: str, **params) -> dict:
    response = httpx.get(url + SYNC_PATH, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def assert_fk_integrity(snapshot: dict[str, dict[str, dict]]) -> None:
    for entity in CATALOGUE:
        for row in snapshot[entity.name].values():
            for field, parent in entity.parents.items():
                assert row[field] in snapshot[parent], f"{entity.name} {row['id']}.{field}={row[field]} dangles"


# data set --------------------------------------------------------------------------
def test_counts_follow_the_scale_with_realistic_ratios():
    tiny = ModelGardenState(scale=20).counts()
    assert all(n >= 1 for n in tiny.values()) and tiny["model"] >= 3
    big = ModelGardenState(scale=1_000_000).layout.counts
    assert 900_000 <= sum(big.values()) <= 1_100_000
    assert big["subscription"] > big["use_case"] > big["project"] > big["model"]
    assert big["llm_model_limit"] > 100 * big["model"]


def test_same_seed_same_rows_and_rows_are_a_function_of_their_index():
    a, b = ModelGardenState(scale=SCALE, seed=11), ModelGardenState(scale=SCALE, seed=11)
    assert a.snapshot() == b.snapshot()
    assert ModelGardenState(scale=SCALE, seed=12).snapshot() != a.snapshot()
    # Row i does not depend on what was generated before it.
    last = a.layout.count("subscription") - 1
    assert a.generator.row("subscription", last) == list(b.rows("subscription"))[last]
    row = a.get("model", "mdl-0000002")
    assert row == b.snapshot()["model"]["mdl-0000002"]
    assert a.get("model", "mdl-9999999") is None and a.get("model", "nonsense") is None


def test_rows_look_realistic():
    snap = ModelGardenState(scale=2000).snapshot()
    models = list(snap["model"].values())
    assert {m["provider"] for m in models} >= {"openai", "anthropic"}
    assert all(isinstance(m["capabilities"], list) and m["capabilities"] for m in models)
    assert all(d["endpoint_url"].startswith("https://") for d in snap["model_deployment"].values())
    for price in snap["llm_model_pricing"].values():
        assert re.fullmatch(r"\d+\.\d{4}", price["input_price_per_1k_tokens"])
    assert {b["currency"] for b in snap["use_case_budget"].values()} <= {"USD", "EUR", "GBP"}
    for rows in snap.values():
        for row in rows.values():
            assert RFC3339_Z.match(row["created_time"]) and row["created_time"] <= row["updated_time"]
            assert row["updated_time"] < "2026"


def test_snapshot_has_foreign_key_integrity_and_unique_subscriptions():
    snap = ModelGardenState(scale=5000).snapshot()
    assert_fk_integrity(snap)
    pairs = [(s["use_case_id"], s["model_id"]) for s in snap["subscription"].values()]
    assert len(pairs) == len(set(pairs))


def test_updated_since_filters_on_updated_time():
    state = ModelGardenState(scale=SCALE)
    limits = list(state.rows("llm_model_limit"))
    cutoff = sorted(r["updated_time"] for r in limits)[len(limits) // 2]
    since = parse_timestamp(cutoff)
    expected = [r for r in limits if r["updated_time"] >= cutoff]
    assert list(state.rows("llm_model_limit", updated_since=since)) == expected
    assert 0 < len(expected) < len(limits)


def test_view_is_consistent_while_state_changes():
    state = ModelGardenState(scale=SCALE)
    view = state.view()
    before = view.snapshot()
    state.mutate(30, rng_seed=5)
    assert view.snapshot() == before
    assert state.snapshot() != before


def test_clock_is_strictly_increasing_even_when_the_source_is_not():
    frozen = datetime(2026, 1, 1, tzinfo=timezone.utc)
    state = ModelGardenState(scale=20, clock=lambda: frozen)
    readings = [state.now() for _ in range(5)]
    assert readings == [frozen + timedelta(microseconds=i) for i in range(5)]
    real = ModelGardenState(scale=20)
    wall = [real.now() for _ in range(1000)]
    assert all(a < b for a, b in zip(wall, wall[1:])) and wall[0].tzinfo is not None


# mutations -------------------------------------------------------------------------
def test_mutations_respect_foreign_keys_and_emit_contract_events(schema):
    state = ModelGardenState(scale=SCALE)
    events = state.mutate(300, rng_seed=1)
    assert len(events) >= 300
    event_check = validator(schema, "event")
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert len({e["event_id"] for e in events}) == len(events)
    assert Counter(e["event_type"] for e in events).keys() == {"CREATED", "UPDATED", "DELETED"}
    for event in events:
        event_check.validate(event)
        assert EVENT_TS.match(event["timestamp"]) and event["version"] == "1.0"
        if event["event_type"] == "DELETED":
            assert event["payload"] == {"id": event["entity_id"]}
        else:
            assert event["payload"]["id"] == event["entity_id"]
            assert event["payload"]["updated_time"] == event["timestamp"]
            validator(schema, event["entity_type"]).validate(event["payload"])
    snap = state.snapshot()
    assert_fk_integrity(snap)
    # Replaying the events over the original data gives the current state.
    replay = ModelGardenState(scale=SCALE).snapshot()
    for e in events:
        if e["event_type"] == "DELETED":
            del replay[e["entity_type"]][e["entity_id"]]
        else:
            replay[e["entity_type"]][e["entity_id"]] = e["payload"]
    assert replay == snap


def test_mutate_is_deterministic_for_a_seed():
    def shape(events):
        return [(e["event_type"], e["entity_type"], e["entity_id"],
                 {k: v for k, v in e["payload"].items() if not k.endswith("_time")}) for e in events]

    a, b = ModelGardenState(scale=SCALE), ModelGardenState(scale=SCALE)
    assert shape(a.mutate(60, rng_seed=9)) == shape(b.mutate(60, rng_seed=9))
    assert all(e["event_type"] == "UPDATED" for e in a.mutate(10, rng_seed=2, kinds=("UPDATED",)))


def test_delete_cascades_children_first():
    state = ModelGardenState(scale=SCALE)
    before = state.snapshot()
    counts = state.counts()
    events = state.delete("project", "proj-0000001")
    assert all(e["event_type"] == "DELETED" for e in events)
    assert events[-1]["entity_id"] == "proj-0000001"
    assert {e["entity_type"] for e in events} >= {"use_case", "use_case_budget", "subscription", "llm_model_limit"}
    position = {(e["entity_type"], e["entity_id"]): i for i, e in enumerate(events)}
    for (entity, entity_id), i in position.items():
        for field, parent in by_name(entity).parents.items():
            parent_key = (parent, before[entity][entity_id][field])
            if parent_key in position:
                assert i < position[parent_key], f"{entity} {entity_id} deleted after its parent"
    assert_fk_integrity(state.snapshot())
    assert state.get("project", "proj-0000001") is None
    assert state.count("project") == counts["project"] - 1
    assert sum(counts.values()) - sum(state.counts().values()) == len(events)


@pytest.mark.parametrize("entity,entity_id", [("model", "mdl-0000002"), ("use_case", "uc-0000007")])
def test_cascade_finds_exactly_the_children(entity, entity_id):
    state = ModelGardenState(scale=20_000)
    before = state.snapshot()
    expected = {(entity, entity_id)}
    for child in CATALOGUE:  # catalogue order: parents are settled before their children
        for row in before[child.name].values():
            if any((parent, row[field]) in expected for field, parent in child.parents.items()):
                expected.add((child.name, row["id"]))
    events = state.delete(entity, entity_id)
    assert {(e["entity_type"], e["entity_id"]) for e in events} == expected
    assert len(events) == len(expected) > 5


def test_explicit_create_update_delete():
    state = ModelGardenState(scale=SCALE)
    [created] = state.create("use_case", project_id="proj-0000002", use_case_name="Claims chat")
    row = created["payload"]
    assert row["project_id"] == "proj-0000002" and row["use_case_name"] == "Claims chat"
    assert row["created_time"] == row["updated_time"] == created["timestamp"]
    assert state.get("use_case", row["id"]) == row
    assert row["id"] in {r["id"] for r in state.rows("use_cases")}  # extract keys work too

    [updated] = state.update("use_case", row["id"], status="inactive")
    assert updated["payload"]["status"] == "inactive" and updated["timestamp"] > created["timestamp"]
    assert state.get("use_case", row["id"])["created_time"] == row["created_time"]
    [touched] = state.update("model", "mdl-0000001")
    assert touched["event_type"] == "UPDATED"

    with pytest.raises(ValueError, match="no field"):
        state.create("project", colour="red")
    with pytest.raises(ValueError, match="set by the simulator"):
        state.update("project", "proj-0000001", id="proj-x")
    with pytest.raises(KeyError):
        state.create("use_case", project_id="proj-9999999")
    assert [e["entity_id"] for e in state.delete("use_case", row["id"])][-1] == row["id"]
    with pytest.raises(KeyError):
        state.delete("use_case", row["id"])


def test_incremental_extract_after_mutations():
    state = ModelGardenState(scale=SCALE)
    with SimulatorServer(state) as server:
        first = get_extract(server.url)
        watermark = first["generated_at"]
        assert EVENT_TS.match(watermark)
        events = state.mutate(25, rng_seed=4)
        incremental = get_extract(server.url, updated_since=watermark)
        assert incremental["updated_since"] == watermark
        served = {(e.name, r["id"]) for e in CATALOGUE for r in incremental[e.extract_key]}
        live_changed = {(e["entity_type"], e["entity_id"]) for e in events
                        if e["event_type"] != "DELETED" and state.get(e["entity_type"], e["entity_id"])}
        assert served == live_changed
        assert get_extract(server.url, updated_since=incremental["generated_at"])["projects"] == []
        # A full extract no longer lists deleted rows.
        full = get_extract(server.url)
        deleted = {(e["entity_type"], e["entity_id"]) for e in events if e["event_type"] == "DELETED"}
        full_ids = {(e.name, r["id"]) for e in CATALOGUE for r in full[e.extract_key]}
        assert deleted and not deleted & full_ids


# the endpoint ------------------------------------------------------------------------
def test_full_extract_is_contract_valid_and_in_catalogue_order(sim, schema):
    doc = get_extract(sim.url)
    errors = list(validator(schema, "sync_all_extract").iter_errors(doc))
    assert not errors, errors[:3]
    assert list(doc) == ["generated_at", "updated_since"] + [e.extract_key for e in CATALOGUE]
    assert doc["updated_since"] is None
    for entity in CATALOGUE:
        rows = doc[entity.extract_key]
        assert [r["id"] for r in rows] == [r["id"] for r in sim.state.rows(entity.name)]
        for row in rows:
            assert RFC3339_Z.match(row["created_time"]) and RFC3339_Z.match(row["updated_time"])
    assert sum(len(doc[e.extract_key]) for e in CATALOGUE) == sum(sim.state.counts().values())


def test_cached_extract_matches_the_state_and_follows_changes():
    """--cache-extract (benchmarks) serves a rendering, but never a stale one, and a fresh generated_at."""
    sim = SimulatorServer(scale=300, seed=5, cache_extract=True).start()
    try:
        def shows_state(doc: dict) -> bool:
            return all(doc[e.extract_key] == json.loads(json.dumps(list(sim.state.rows(e.name)))) for e in CATALOGUE)

        first, second = get_extract(sim.url), get_extract(sim.url)
        assert shows_state(first) and shows_state(second)
        assert parse_timestamp(second["generated_at"]) > parse_timestamp(first["generated_at"])
        sim.state.mutate(15, rng_seed=9)
        changed = get_extract(sim.url)
        assert not shows_state(first) and shows_state(changed)
        sim.faults.add({"drop_fraction": {"entity": "subscription", "fraction": 0.5}})
        assert len(get_extract(sim.url)["use_case_llm_models"]) < len(changed["use_case_llm_models"])
        assert shows_state(get_extract(sim.url))  # the fault was for one request only
    finally:
        sim.stop()


def test_extract_streams_in_chunks(sim):
    with httpx.stream("GET", sim.url + SYNC_PATH) as response:
        assert response.headers["content-type"] == "application/json"
        assert "content-length" not in response.headers  # chunked: never built as one document
        assert len(b"".join(response.iter_bytes())) > 10_000


def test_malformed_updated_since_is_a_readable_400(sim):
    for bad in ("yesterday", "2025-13-01T00:00:00Z", "2025-07-15T14:20:00"):
        response = httpx.get(sim.url + SYNC_PATH, params={"updated_since": bad})
        assert response.status_code == 400
        assert "updated_since" in response.json()["detail"]
    ok = httpx.get(sim.url + SYNC_PATH, params={"updated_since": "2025-07-15T14:20:00+02:00"})
    assert ok.status_code == 200 and ok.json()["updated_since"] == "2025-07-15T14:20:00+02:00"


def test_bearer_token_is_required_when_set():
    with SimulatorServer(scale=50, token="s3cret") as server:
        assert httpx.get(server.url + SYNC_PATH).status_code == 401
        wrong = httpx.get(server.url + SYNC_PATH, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        good = httpx.get(server.url + SYNC_PATH, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and good.json()["projects"]
        assert server.faults.requests == 3


# faults --------------------------------------------------------------------------------
def test_429_carries_retry_after_and_then_the_next_request_succeeds(sim):
    sim.faults.add({"status": 429, "retry_after": 2})
    first = httpx.get(sim.url + SYNC_PATH)
    assert first.status_code == 429 and first.headers["Retry-After"] == "2"
    assert httpx.get(sim.url + SYNC_PATH).status_code == 200
    assert sim.faults.requests == 2
    assert [r.faults for r in sim.faults.log()] == [["status"], []]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_for_as_many_requests_as_asked(sim, status):
    sim.faults.add("status", status=status, times=2)
    assert [httpx.get(sim.url + SYNC_PATH).status_code for _ in range(3)] == [status, status, 200]


def test_skip_lines_faults_up_one_after_another(sim):
    sim.faults.add_all([{"status": 503}, {"status": 429, "skip": 1}])
    assert [httpx.get(sim.url + SYNC_PATH).status_code for _ in range(3)] == [503, 429, 200]


def test_slow_trips_a_client_timeout(sim):
    sim.faults.add({"slow": 0.6})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(sim.url + SYNC_PATH, timeout=httpx.Timeout(0.15))
    time.sleep(0.6)  # let the slow request finish before the next test
    assert httpx.get(sim.url + SYNC_PATH).status_code == 200


@pytest.mark.parametrize("cut", [700, 10_000_000])
def test_truncate_gives_an_incomplete_body(sim, cut):
    sim.faults.add({"truncate": cut})
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", sim.url + SYNC_PATH) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
    if cut == 700:
        assert len(received) == 700
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)


def test_invalid_json_is_a_complete_response_with_a_broken_document(sim):
    sim.faults.add({"invalid_json": True})
    response = httpx.get(sim.url + SYNC_PATH)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_reset_closes_the_connection_without_a_response(sim):
    sim.faults.add({"reset": True})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(sim.url + SYNC_PATH)
    assert httpx.get(sim.url + SYNC_PATH).status_code == 200


def test_empty_extract(sim):
    sim.faults.add({"empty": True})
    doc = get_extract(sim.url)
    assert doc["generated_at"] and all(doc[e.extract_key] == [] for e in CATALOGUE)


def test_drop_fraction_is_deterministic(sim):
    sim.faults.add({"drop_fraction": {"entity": "llm_model_limit", "fraction": 0.5}, "times": 2})
    first, second = get_extract(sim.url), get_extract(sim.url)
    total = sim.state.count("llm_model_limit")
    assert 0 < len(first["limits"]) < total
    assert first["limits"] == second["limits"]
    assert len(get_extract(sim.url)["limits"]) == total


def test_extra_fields_are_added_and_rows_stay_valid(sim, schema):
    sim.faults.add({"extra_fields": {"entity": "models", "fields": {"x_tier": "gold", "x_n": 3}}})
    doc = get_extract(sim.url)
    assert all(m["x_tier"] == "gold" and m["x_n"] == 3 for m in doc["models"])
    assert all("x_tier" not in p for p in doc["projects"])
    assert not list(validator(schema, "sync_all_extract").iter_errors(doc))


@pytest.mark.parametrize(
    "entity,error",
    [("project", "missing_field"), ("llm_model_limit", "wrong_type"),
     ("llm_model_pricing", "bad_money"), ("subscription", "dangling_parent")],
)
def test_invalid_rows_corrupt_the_first_rows(sim, schema, entity, error):
    e = by_name(entity)
    sim.faults.add({"invalid_rows": {"entity": entity, "count": 1, "kind": error}})
    rows = get_extract(sim.url)[e.extract_key]
    check = validator(schema, entity)
    if error == "dangling_parent":
        parents = {k: {r["id"] for r in sim.state.rows(p)} for k, p in e.parents.items()}
        assert any(rows[0][k] not in ids for k, ids in parents.items())
    else:
        assert not check.is_valid(rows[0])
    assert all(check.is_valid(r) for r in rows[1:])


def test_duplicate_ids(sim):
    sim.faults.add({"kind": "duplicate_ids", "entity": "use_case_llm_models", "count": 3})
    ids = [r["id"] for r in get_extract(sim.url)["use_case_llm_models"]]
    assert len(ids) - len(set(ids)) == 3


def test_bad_faults_are_refused():
    plan = FaultPlan()
    for bad in ({"status": 200}, {"truncate": -1}, {"bogus": 1}, {"status": 500, "slow": 1},
                {"invalid_rows": {"entity": "project", "kind": "bad_money"}},
                {"drop_fraction": {"entity": "nope", "fraction": 0.5}}, {"kind": "status", "times": 0}):
        with pytest.raises(ValueError):
            plan.add(bad)
    assert Fault.from_dict({"status": 429}).to_dict() == {
        "kind": "status", "times": 1, "skip": 0, "status": 429, "retry_after": 1}


def test_control_endpoints(sim):
    url = sim.url
    added = httpx.post(url + "/_sim/faults", json=[{"status": 503, "times": 2}, {"kind": "empty"}])
    assert added.status_code == 200 and len(added.json()["pending"]) == 2
    assert httpx.post(url + "/_sim/faults", json={"nope": 1}).status_code == 400
    assert httpx.delete(url + "/_sim/faults").json() == {"cleared": 2}
    httpx.get(url + SYNC_PATH)
    stats = httpx.get(url + "/_sim/stats").json()
    assert stats["requests"] == 1 and stats["counts"] == sim.state.counts()
    assert httpx.get(url + "/_sim/snapshot").json()["project"].keys() == sim.state.snapshot()["project"].keys()


def test_mutate_endpoint():
    with SimulatorServer(scale=SCALE) as server:
        events = httpx.post(server.url + "/_sim/mutate", json={"n": 5, "seed": 1}).json()["events"]
        assert len(events) >= 5 and all(e["version"] == "1.0" for e in events)
        assert httpx.post(server.url + "/_sim/mutate", json={"n": 1, "kinds": ["EXPLODED"]}).status_code == 400


def test_server_starts_and_stops_cleanly():
    # Start-up speed is not asserted here: timings belong to bench/, not to tests that a busy CI box can flake.
    server = SimulatorServer(scale=100).start()
    assert httpx.get(server.url + SYNC_PATH).status_code == 200
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + SYNC_PATH)


# signatures and push ---------------------------------------------------------------
def test_signature_sign_and_verify():
    body = b'{"event_type":"CREATED"}'
    now = 1_760_000_000
    header = sign("alpha", body, t=now)
    assert re.fullmatch(r"t=1760000000,v1=[0-9a-f]{64}", header)
    verify(header, body, ["alpha"], now=now + 10)
    verify(header, body, ["alpha"], now=now + 300)  # the tolerance's edges are inside it
    verify(header, body, ["alpha"], now=now - 300)
    verify(header, body, ["beta", "alpha"], now=now)  # rotation: the old secret still verifies
    cases = [
        (header, body, ["beta"], now, "does not match"),
        (header, body + b" ", ["alpha"], now, "does not match"),
        (header, body, ["alpha"], now + 301, "old"),
        (header, body, ["alpha"], now - 301, "future"),
        (None, body, ["alpha"], now, "missing"),
        ("garbage", body, ["alpha"], now, "malformed"),
        ("t=abc,v1=00", body, ["alpha"], now, "malformed"),
        (f"t={now}", body, ["alpha"], now, "malformed"),
        (f"t={now},v1=zz\u00e9", body, ["alpha"], now, "does not match"),
    ]
    for hdr, data, secrets, at, reason in cases:
        with pytest.raises(SignatureError, match=reason) as info:
            verify(hdr, data, secrets, now=at)
        assert "alpha" not in str(info.value) and "beta" not in str(info.value)
    assert isinstance(SignatureError("x"), ValueError)
    assert abs(int(sign("k", body).split(",")[0][2:]) - time.time()) < 5


def test_pusher_signs_each_event_and_batches():
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        verify(request.headers.get(HEADER), request.content, ["old", "new"])
        return httpx.Response(200, json={"status": "ok", "message": "stored"})

    events = ModelGardenState(scale=SCALE).mutate(4, rng_seed=3)
    client = httpx.Client(transport=httpx.MockTransport(receiver))
    with EventPusher("http://receiver/api/v1/model-garden/events", secret="new", client=client) as pusher:
        assert [r.status_code for r in pusher.push(events)] == [200] * len(events)
    assert [json.loads(r.content) for r in received] == events
    received.clear()
    batch = EventPusher("http://receiver/batch", secret="old", batch=True, client=client)
    assert len(batch.push(events)) == 1 and json.loads(received[0].content) == events
    unsigned = EventPusher("http://receiver/x", client=httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200 if HEADER not in r.headers else 500))))
    assert unsigned.push(events[:1])[0].status_code == 200


# memory ----------------------------------------------------------------------------------
def test_rows_are_generated_lazily_at_a_million():
    state = ModelGardenState(scale=1_000_000)
    tracemalloc.start()
    try:
        n = sum(1 for _ in itertools.islice(state.rows("subscription"), 40_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 40_000 and peak < 5_000_000


@pytest.mark.slow
def test_counting_a_million_row_entity_stays_small():
    state = ModelGardenState(scale=1_000_000)
    state.mutate(50, rng_seed=1)
    tracemalloc.start()
    try:
        n = sum(1 for _ in state.rows("subscription"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == state.count("subscription") and n > 400_000
    assert peak < 50_000_000, f"peak {peak / 1e6:.1f} MB while counting {n} rows"


def test_format_and_parse_round_trip():
    t = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=timezone.utc)
    assert format_timestamp(t) == "2026-03-04T05:06:07.000089Z"
    assert parse_timestamp(format_timestamp(t)) == t


def test_the_cached_extract_rendering_is_removed_when_the_simulator_stops(tmp_path, monkeypatch):
    """A 1M-row rendering is ~190 MB: a benchmark that starts simulators must not fill the temp directory."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with SimulatorServer(scale=300, seed=1, cache_extract=True) as server:
        assert httpx.get(server.url + "/model-garden/sync/all", timeout=30).status_code == 200
        assert len(list(tmp_path.glob("garden-sim-extract-*"))) == 1
    assert list(tmp_path.glob("garden-sim-extract-*")) == []


def test_a_background_server_leaves_the_process_logging_configuration_alone(monkeypatch):
    """Re-configuring logging from a server's start, while another thread logs, deadlocked a test run."""
    import logging.config

    def refuse(config):
        raise AssertionError("logging.config.dictConfig called by a background server")

    monkeypatch.setattr(logging.config, "dictConfig", refuse)
    with SimulatorServer(scale=50, seed=1) as server:
        assert httpx.get(server.url + "/model-garden/sync/all", timeout=30).status_code == 200
