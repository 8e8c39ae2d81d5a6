"""Two receivers on one machine share the inbox: every event is stored once, whichever one got it."""

from __future__ import annotations

import httpx

from garden_pipeline_tests.events_harness import apply, event, inbox_rows, post, project, start_receiver


def test_two_receivers_behind_a_balancer_store_each_event_once(pg_url, schema, db):
    first, second = start_receiver(pg_url, schema), start_receiver(pg_url, schema)
    try:
        events = [event("CREATED", "project", f"p{i}", "2025-07-15T14:00:00Z",
                        project(f"p{i}", "Scaled", "2025-07-15T14:00:00Z"), event_id=f"e{i}") for i in range(40)]
        for i, e in enumerate(events):
            target, other = (first, second) if i % 2 else (second, first)
            assert post(target.url, e).status_code == 200
            assert post(other.url, e).status_code == 200  # the pusher retried via the other replica
        assert len(inbox_rows(db, schema)) == 40
        assert apply(pg_url, schema).states["applied"] == 40
        for receiver in (first, second):
            metrics = httpx.get(receiver.url + "/metrics").text
            assert 'garden_events_acknowledged_total{result="stored"}' in metrics
            assert 'garden_inbox_events{state="pending"} 0.0' in metrics
        stored = sum(float(line.split()[-1]) for r in (first, second) for line in httpx.get(r.url + "/metrics").text
                     .splitlines() if line.startswith('garden_events_acknowledged_total{result="stored"}'))
        assert stored == 40
    finally:
        first.stop()
        second.stop()


def test_metrics_count_rejections_by_reason(pg_url, schema):
    receiver = start_receiver(pg_url, schema, secrets=["s3cret"])
    try:
        post(receiver.url, event("DELETED", "project", "p1", "2025-07-15T14:00:00Z"))  # unsigned
        post(receiver.url, {"event_type": "NOPE"}, "s3cret")
        metrics = httpx.get(receiver.url + "/metrics").text
        assert 'garden_events_rejected_total{reason="signature"} 1.0' in metrics
        assert 'garden_events_rejected_total{reason="validation"} 1.0' in metrics
        assert "s3cret" not in metrics
    finally:
        receiver.stop()
