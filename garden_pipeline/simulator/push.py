"""Pushing Model Garden events to the pipeline's receiver, signed per contract section 3.

``EventPusher`` POSTs one event per request (``POST {url}``, the contract's
endpoint) or, with ``batch=True``, one JSON array per call. ``PeriodicPusher``
makes random changes to a simulator state on a timer and pushes their events.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Iterable

import httpx

from garden_pipeline.events.signature import HEADER, sign
from garden_pipeline.simulator.dataset import ModelGardenState

log = logging.getLogger(__name__)


def encode_json(value: object) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_headers(body: bytes, secret: str | None, t: int | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[HEADER] = sign(secret, body, t)
    return headers


class EventPusher:
    """POSTs events to ``url``; a context manager owning its httpx client unless given one."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        batch: bool = False,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ):
        self.url = url
        self.secret = secret
        self.batch = batch
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    def post(self, payload: dict | list) -> httpx.Response:
        """POST one event object (or a list, for a batch endpoint), signed if there is a secret."""
        body = encode_json(payload)
        return self._client.post(self.url, content=body, headers=signed_headers(body, self.secret))

    def push(self, events: Iterable[dict]) -> list[httpx.Response]:
        """Send events in order: one request each, or a single batch request."""
        events = list(events)
        if not events:
            return []
        if self.batch:
            return [self.post(events)]
        return [self.post(event) for event in events]

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> "EventPusher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def push_events(
    url: str, events: Iterable[dict], secret: str | None = None, *, batch: bool = False, timeout: float = 10.0
) -> list[httpx.Response]:
    """One-shot helper: push ``events`` to ``url`` and return the responses."""
    with EventPusher(url, secret, batch=batch, timeout=timeout) as pusher:
        return pusher.push(events)


class PeriodicPusher:
    """Every ``interval`` s: ``changes`` random changes to ``state``, their events pushed."""

    def __init__(self, state: ModelGardenState, pusher: EventPusher, interval: float = 5.0, changes: int = 5):
        self.state = state
        self.pusher = pusher
        self.interval = interval
        self.changes = changes
        self.pushed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-garden-pusher", daemon=True)

    def start(self) -> "PeriodicPusher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 15)
        self.pusher.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            events = self.state.mutate(self.changes)
            try:
                responses = self.pusher.push(events)
            except httpx.HTTPError as exc:
                # The receiver being down must not stop the simulator; the extract still shows the changes.
                self.failed += len(events)
                log.warning("pushing %d events to %s failed: %s", len(events), self.pusher.url, exc)
                continue
            bad = [r for r in responses if r.status_code >= 300]
            self.failed += len(bad)
            self.pushed += len(responses) - len(bad)
            for r in bad[:3]:
                log.warning("event receiver answered %s: %s", r.status_code, r.text[:200])
