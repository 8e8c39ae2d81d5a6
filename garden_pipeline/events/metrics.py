"""Prometheus metrics of the events receiver (``GET /metrics``).

Each receiver process has its own registry; the inbox backlog is read from
PostgreSQL at scrape time, so every replica reports the same, shared queue.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from psycopg_pool import ConnectionPool

from garden_pipeline.events import inbox


class _BacklogCollector:
    def __init__(self, pool: ConnectionPool, schema: str):
        self.pool, self.schema = pool, schema

    def collect(self):
        gauge = GaugeMetricFamily("garden_inbox_events", "Inbox events not yet settled, by state", labels=["state"])
        age = GaugeMetricFamily("garden_inbox_oldest_pending_age_seconds", "Age of the oldest pending event")
        try:
            with self.pool.connection(timeout=2) as conn:
                backlog = inbox.backlog(conn, self.schema)
                oldest = conn.execute(
                    f'SELECT extract(epoch FROM now() - min(received_at)) FROM "{self.schema}_sync".inbox '
                    "WHERE state = 'pending'").fetchone()[0]
        except Exception:  # a scrape must not fail because the database is briefly unreachable
            return
        for state in ("pending", "parked", "dead_lettered"):
            gauge.add_metric([state], backlog[state])
        age.add_metric([], float(oldest or 0))
        yield gauge
        yield age


class ReceiverMetrics:
    def __init__(self, pool: ConnectionPool, schema: str):
        self.registry = CollectorRegistry()
        self.requests = Counter("garden_events_requests", "HTTP requests to the events endpoints",
                                ["endpoint", "status"], registry=self.registry)
        self.acknowledged = Counter("garden_events_acknowledged", "Events acknowledged with 200",
                                    ["result"], registry=self.registry)
        self.rejected = Counter("garden_events_rejected", "Requests refused, by reason", ["reason"],
                                registry=self.registry)
        self.latency = Histogram("garden_events_request_seconds", "Time to answer an events request",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.registry.register(_BacklogCollector(pool, schema))


class CountRequests:
    """ASGI middleware counting requests and timing them per endpoint.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs each
    request through extra tasks and streams, which cost more than the rest of a single-event request.
    """

    def __init__(self, app, metrics: ReceiverMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"].rsplit("/", 1)[-1] or "/"
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, str(status)).inc()
