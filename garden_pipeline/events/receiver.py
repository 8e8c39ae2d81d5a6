"""The events receiver: Model Garden's pushed CUD events into the inbox (FastAPI on uvicorn).

It is stateless: the inbox table is the queue, so any number of receivers can
run behind a load balancer. A 200 is sent only after the event's row has
committed (synchronous commit), so a receiver killed after replying has lost
nothing it acknowledged. Concurrent single events share commits (group_commit).
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool

from garden_pipeline.events import inbox
from garden_pipeline.events.envelope import EVENT_SCHEMA, EventError, validate_event
from garden_pipeline.events.group_commit import GroupCommitter
from garden_pipeline.events.metrics import CountRequests, ReceiverMetrics
from garden_pipeline.events.signature import HEADER, SignatureError, verify
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import libpq_url, redact

log = logging.getLogger("garden_pipeline.receiver")

SERVICE = "synchronize-api"
MAX_BODY = 1024 * 1024  # contract: 413 above 1 MiB
PREFIX = "/api/v1/model-garden"


@dataclass
class ReceiverSettings:
    db_url: str
    schema: str = "gateway"
    secrets: list[str] = field(default_factory=list)  # empty: signatures not required
    max_batch: int = 500
    pool_min: int = 1
    pool_max: int = 10

    @staticmethod
    def parse_secrets(value: str | None) -> list[str]:
        """GARDEN_EVENTS_SECRET: one secret, or two comma-separated while rotating."""
        return [s.strip() for s in (value or "").split(",") if s.strip()]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("garden_pipeline")
    except PackageNotFoundError:  # pragma: no cover
        return "0+unknown"


_MESSAGE = {"type": "object", "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
            "required": ["status", "message"]}
_RESPONSES = {
    200: {"description": "Stored (or a duplicate, already stored)", "content": {"application/json": {"schema": _MESSAGE}}},
    401: {"description": "Missing, wrong or expired X-Garden-Signature", "content": {"application/json": {"schema": _MESSAGE}}},
    413: {"description": "Body over 1 MiB", "content": {"application/json": {"schema": _MESSAGE}}},
    415: {"description": "Content type is not JSON", "content": {"application/json": {"schema": _MESSAGE}}},
    422: {"description": "Not a valid event; the message says why", "content": {"application/json": {"schema": _MESSAGE}}},
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


class _Refused(Exception):
    def __init__(self, status: int, message: str, reason: str):
        self.status, self.message, self.reason = status, message, reason


def create_receiver(settings: ReceiverSettings) -> FastAPI:
    migrate.upgrade(settings.db_url, settings.schema)
    pool = ConnectionPool(
        libpq_url(settings.db_url), min_size=settings.pool_min, max_size=settings.pool_max,
        kwargs={"autocommit": True}, open=False, name="garden-inbox",
    )
    def _store_each(events) -> list[bool]:
        with pool.connection() as conn:
            return inbox.store_each(conn, settings.schema, events)

    committer = GroupCommitter(_store_each, max_batch=settings.max_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        pool.open()
        committer.start()
        try:
            yield
        finally:
            await committer.stop()
            pool.close()

    app = FastAPI(
        title="garden_pipeline events receiver",
        version=_version(),
        description="Receives Model Garden's CUD events (contract section 3) and stores them in the inbox.",
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.settings = settings

    async def _body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise _Refused(413, f"body of {length} bytes is over the 1 MiB limit", "too_large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise _Refused(413, "body is over the 1 MiB limit", "too_large")
        return body

    def _check(request: Request, body: bytes) -> Any:
        if settings.secrets:
            try:
                verify(request.headers.get(HEADER), body, settings.secrets)
            except SignatureError as exc:
                raise _Refused(401, str(exc), "signature") from None
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.split(";")[0].lower():
            raise _Refused(415, f"content type must be application/json, got {ctype[:60]!r}", "content_type")
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise _Refused(422, "body is not valid UTF-8", "encoding") from None
        except (json.JSONDecodeError, RecursionError):
            raise _Refused(422, "body is not valid JSON", "json") from None

    metrics = ReceiverMetrics(pool, settings.schema)
    app.state.metrics = metrics

    @app.exception_handler(_Refused)
    async def _refused(_request: Request, exc: _Refused) -> JSONResponse:
        metrics.rejected.labels(exc.reason).inc()
        return _error(exc.status, exc.message)

    app.add_middleware(CountRequests, metrics=metrics)

    def _invalid(message: str) -> JSONResponse:
        metrics.rejected.labels("validation").inc()
        return _error(422, message)

    def _acked(new: int, total: int) -> None:
        metrics.acknowledged.labels("stored").inc(new)
        metrics.acknowledged.labels("duplicate").inc(total - new)

    @app.post(f"{PREFIX}/events", summary="Receive one event", responses=_RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": EVENT_SCHEMA}}}})
    async def receive_event(request: Request) -> JSONResponse:
        data = _check(request, await _body(request))
        try:
            event = validate_event(data)
        except EventError as exc:
            return _invalid(str(exc))
        new = await committer.submit(event)  # shares a commit with concurrent requests
        _acked(new, 1)
        return JSONResponse({"status": "ok", "message": "stored" if new else "duplicate, already stored"})

    @app.post(f"{PREFIX}/events/batch", summary="Receive a JSON array of events, all or nothing", responses=_RESPONSES,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"type": "array", "items": EVENT_SCHEMA, "minItems": 1}}}}})
    async def receive_batch(request: Request) -> JSONResponse:
        data = _check(request, await _body(request))
        if not isinstance(data, list):
            return _invalid("the batch body must be a JSON array of events")
        if not data:
            return _invalid("the batch is empty")
        if len(data) > settings.max_batch:
            return _invalid(f"the batch has {len(data)} events; at most {settings.max_batch} allowed")
        events = []
        for i, item in enumerate(data):
            try:
                events.append(validate_event(item))
            except EventError as exc:
                return _invalid(f"event [{i}]: {exc}; nothing from this batch was stored")
        new = sum(await run_in_threadpool(_store_each, events))
        _acked(new, len(events))
        return JSONResponse({"status": "ok", "message": f"stored {new}, duplicates {len(events) - new}",
                             "stored": new, "duplicates": len(events) - new})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{PREFIX}/health", summary="Liveness and version")
    def health() -> dict:
        return {"status": "healthy", "service": SERVICE, "version": _version()}

    log.info("events receiver on GatewayDB %s schema %s (signatures %s)", redact(settings.db_url),
             settings.schema, "required" if settings.secrets else "not required")
    return app


def receiver_from_env() -> FastAPI:
    """The app as configured by the environment (GATEWAY_DB_URL or the embedded PostgreSQL)."""
    from garden_pipeline.resources.select import build_resources
    from garden_pipeline.settings import Settings, env

    settings = Settings.from_env()
    db = build_resources(settings)["gateway_db"]
    max_batch = env("GARDEN_EVENTS_MAX_BATCH", "500")
    if not max_batch.isdigit() or int(max_batch) < 1:  # type: ignore[union-attr]
        raise ValueError(f"GARDEN_EVENTS_MAX_BATCH={max_batch!r} must be a positive whole number")
    return create_receiver(ReceiverSettings(
        db_url=db.url() if not settings.gateway_db_url else settings.gateway_db_url,
        schema=settings.gateway_db_schema,
        secrets=ReceiverSettings.parse_secrets(env("GARDEN_EVENTS_SECRET")),
        max_batch=int(max_batch),  # type: ignore[arg-type]
    ))
