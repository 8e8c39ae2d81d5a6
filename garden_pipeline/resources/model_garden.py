"""Model Garden's /sync/all as a Dagster resource, on httpx, streamed and retried.

Retries cover what the contract says to expect before the body starts: 429
(waiting what Retry-After says), 5xx, timeouts and connection errors, with
exponential backoff and jitter. Once the body has started, a break is not
retried here: the caller has been writing a staged copy in a transaction and
must roll it back, so the step fails with a clear error instead.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from datetime import datetime
from typing import Callable, Iterator, Optional

import httpx
from dagster import ConfigurableResource
from pydantic import Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from garden_pipeline.extract.stream import ExtractError

SYNC_ALL_PATH = "/model-garden/sync/all"


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


class ModelGardenResource(ConfigurableResource, ABC):
    """Reads Model Garden's extract. Subclasses say where Model Garden is."""

    token: Optional[str] = Field(default=None, description="MODEL_GARDEN_TOKEN, sent as a bearer token.")
    connect_timeout: float = Field(default=10.0, description="Seconds to open a connection.")
    read_timeout: float = Field(default=120.0, description="Seconds to wait for any byte of the response.")
    max_attempts: int = Field(default=5, description="Attempts before a retryable error fails the step.")
    backoff_initial: float = Field(default=0.5, description="First backoff in seconds (doubles, with jitter).")
    backoff_max: float = Field(default=30.0, description="Longest backoff between attempts.")
    retry_after_max: float = Field(default=300.0, description="Longest Retry-After we agree to wait.")

    @abstractmethod
    def base_url(self) -> str: ...

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max)
        backoff = min(self.backoff_max, self.backoff_initial * 2 ** (state.attempt_number - 1))
        return backoff / 2 + random.uniform(0, backoff / 2)

    @contextmanager
    def open_extract(
        self, updated_since: datetime | None = None, log: Callable[[str], None] | None = None
    ) -> Iterator[Iterator[bytes]]:
        """Yield the extract body as an iterator of byte chunks, after a 200."""
        params = {"updated_since": updated_since.isoformat().replace("+00:00", "Z")} if updated_since else {}
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        url = self.base_url().rstrip("/") + SYNC_ALL_PATH
        with httpx.Client(timeout=timeout, headers=headers) as client:
            response = None
            retrying = Retrying(
                retry=retry_if_exception_type(_Retryable),
                stop=stop_after_attempt(self.max_attempts),
                wait=self._wait,
                reraise=True,
                before_sleep=(
                    (lambda s: log(f"Model Garden attempt {s.attempt_number} failed ({s.outcome.exception()}); "
                                   f"retrying in {s.next_action.sleep:.1f}s"))
                    if log else None
                ),
            )
            try:
                for attempt in retrying:
                    with attempt:
                        response = self._start(client, url, params)
            except _Retryable as exc:
                raise ExtractError(
                    f"Model Garden {SYNC_ALL_PATH} failed {self.max_attempts} times; last error: {exc}"
                ) from None
            try:
                yield _body(response)
            finally:
                response.close()

    def _start(self, client: httpx.Client, url: str, params: dict) -> httpx.Response:
        try:
            response = client.send(client.build_request("GET", url, params=params), stream=True)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'no response'}") from None
        if response.status_code == 200:
            return response
        response.read()
        response.close()
        status = response.status_code
        if status == 429:
            raise _Retryable("HTTP 429 Too Many Requests", _retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 500:
            raise _Retryable(f"HTTP {status}")
        hint = " (check MODEL_GARDEN_TOKEN)" if status in (401, 403) else ""
        raise ExtractError(f"Model Garden refused {SYNC_ALL_PATH}: HTTP {status}{hint}: {response.text[:200]}")


def _body(response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(chunk_size=256 * 1024)
    except (httpx.TimeoutException, httpx.TransportError) as exc:
        raise ExtractError(
            f"the connection to Model Garden broke after {response.num_bytes_downloaded} bytes of the /sync/all body "
            f"({type(exc).__name__}); nothing from this extract was written"
        ) from None


class ModelGardenClient(ModelGardenResource):
    """The real Model Garden at MODEL_GARDEN_URL."""

    url: str = Field(description="MODEL_GARDEN_URL, e.g. https://model-garden.internal")

    def base_url(self) -> str:
        return self.url


_local_lock = threading.Lock()
_local_servers: dict[tuple[int, int], object] = {}


class LocalModelGarden(ModelGardenResource):
    """The simulator, started in this process on a free loopback port: the embedded default."""

    scale: int = Field(default=2000, description="Rows in the simulated Model Garden.")
    seed: int = Field(default=7, description="Seed of the simulated data set.")

    def base_url(self) -> str:
        from garden_pipeline.simulator import SimulatorServer

        with _local_lock:
            server = _local_servers.get((self.scale, self.seed))
            if server is None:
                server = SimulatorServer.start_background(scale=self.scale, seed=self.seed)
                _local_servers[(self.scale, self.seed)] = server
        return server.url  # type: ignore[attr-defined]
