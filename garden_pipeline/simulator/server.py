"""Model Garden's HTTP face: ``GET /model-garden/sync/all`` plus ``/_sim/`` controls.

``create_app`` builds the FastAPI app; :class:`SimulatorServer` runs it with
uvicorn on a background thread for tests and for the embedded default;
:func:`run_simulator` is the blocking entry point behind ``garden-pipeline simulate``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from garden_pipeline.serving import BackgroundServer
from garden_pipeline.simulator.clock import format_timestamp, parse_timestamp
from garden_pipeline.simulator.dataset import ModelGardenState
from garden_pipeline.simulator.extract_stream import extract_chunks
from garden_pipeline.simulator.faults import Fault, FaultPlan

SYNC_PATH = "/model-garden/sync/all"
SNAPSHOT_LIMIT = 50_000  # rows; /_sim/snapshot builds one JSON document in memory
_CYCLE = "garden_sim.cycle"
log = logging.getLogger(__name__)


class _SimulatorApp(FastAPI):
    """FastAPI that remembers uvicorn's per-request cycle, so faults can cut the connection.

    ASGI has no "drop the connection" message. uvicorn's ``send`` is a bound
    method of its request cycle, which owns the transport; Starlette wraps
    ``send`` further in, so it is captured here, at the outermost layer.
    """

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scope[_CYCLE] = getattr(send, "__self__", None)
        await super().__call__(scope, receive, send)


async def _close_connection(request: Request, abort: bool) -> None:
    """Close the client connection (``abort``: at once; else after flushing what was sent)."""
    cycle = request.scope.get(_CYCLE)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        # Not under uvicorn (e.g. an in-process test client): failing the request is the closest.
        raise ConnectionAbortedError("connection dropped by a simulator fault")
    transport.abort() if abort else transport.close()
    # Wait until uvicorn has seen the connection go, so it does not answer on it (a 500, or
    # the final empty chunk that would make a cut body look complete).
    deadline = time.monotonic() + 5
    while not getattr(cycle, "disconnected", True) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def _body(request: Request, chunks: AsyncIterator[bytes], cut_at: int | None) -> AsyncIterator[bytes]:
    """Pass chunks through; with ``cut_at``, stop after that many bytes and drop the connection.

    One chunk is held back so that a cut always happens, even when the whole
    body is shorter than ``cut_at``: then its last byte is withheld.
    """
    if cut_at is None:
        async for chunk in chunks:
            yield chunk
        return
    sent = 0
    held: bytes | None = None
    async for chunk in chunks:
        if held is not None:
            if sent + len(held) >= cut_at:
                break
            sent += len(held)
            yield held
        held = chunk
    else:
        if held is not None:
            held = held[:-1]
    if held:
        part = held[: max(0, cut_at - sent)]
        if part:
            yield part
    await _close_connection(request, abort=False)


def _fault_response(fault: Fault) -> Response:
    status, retry_after = fault.params["status"], fault.params.get("retry_after")
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
    return JSONResponse({"detail": f"simulated HTTP {status} (fault injected by the Model Garden simulator)"},
                        status_code=status, headers=headers)


_BODY_FAULTS = ("drop_fraction", "extra_fields", "invalid_rows", "duplicate_ids", "empty", "invalid_json")


@dataclass
class _Rendered:
    key: tuple
    path: str


class _ExtractCache:
    """The full extract rendered once to a file and served from it while the state is unchanged.

    For benchmarks: "extract available" should mean the source is ready, not that the simulator is
    still generating rows in Python. Only the header (a fresh ``generated_at``) is made per request.
    """

    def __init__(self, state: ModelGardenState):
        self.state = state
        self.rendered: _Rendered | None = None
        self.lock = asyncio.Lock()

    async def chunks(self, due: list[Fault]) -> AsyncIterator[bytes] | None:
        shape = tuple(sorted((f.kind, json.dumps(f.params, sort_keys=True)) for f in due if f.kind in _BODY_FAULTS))
        async with self.lock:
            version = self.state.version
            if self.rendered is None or self.rendered.key != (version, shape):
                version, view = self.state.versioned_view()
                path = await asyncio.to_thread(self._render, view, due)
                self._drop()
                self.rendered = _Rendered((version, shape), path)
            generated_at = self.state.stamp_if_unchanged(version)
            if generated_at is None:
                return None  # changed meanwhile: render it live this time
            path = self.rendered.path
        header = json.dumps({"generated_at": format_timestamp(generated_at), "updated_since": None},
                            separators=(",", ":"))[:-1].encode()
        return iterate_in_threadpool(_file_chunks(path, header))

    @staticmethod
    def _render(view, due: list[Fault]) -> str:
        fd, path = tempfile.mkstemp(prefix="garden-sim-extract-", suffix=".json")
        with os.fdopen(fd, "wb") as f:
            parts = extract_chunks(view, "", None, due)
            next(parts)  # the header, made per request
            for part in parts:
                f.write(part)
        return path

    def _drop(self) -> None:
        if self.rendered is not None:
            try:
                os.unlink(self.rendered.path)
            except OSError:
                pass


def _file_chunks(path: str, header: bytes, size: int = 1 << 20):
    yield header
    with open(path, "rb") as f:
        while block := f.read(size):
            yield block


def create_app(state: ModelGardenState, faults: FaultPlan | None = None, token: str | None = None,
               cache_extract: bool = False) -> FastAPI:
    """The simulator app serving ``state``, consulting ``faults``, guarded by ``token`` if set.

    With ``cache_extract`` the full extract (no ``updated_since``) is served from a rendering kept
    until the state or the body faults change (see _ExtractCache).
    """
    plan = faults if faults is not None else FaultPlan()
    cache = _ExtractCache(state) if cache_extract else None
    app = _SimulatorApp(title="Model Garden simulator", version="1.0")
    if cache is not None:
        app.router.on_shutdown.append(cache._drop)  # a 1M-row rendering is ~190 MB in the temp directory
    app.state.garden = state
    app.state.faults = plan

    @app.get(SYNC_PATH)
    async def sync_all(request: Request, updated_since: str | None = None) -> Response:
        record = plan.begin_request(request.url.query)
        response = await _sync_all(request, updated_since, record)
        record.status = response.status_code
        return response

    async def _sync_all(request: Request, updated_since: str | None, record) -> Response:
        if token is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        if updated_since is not None:
            try:
                parse_timestamp(updated_since)
            except ValueError as exc:
                return JSONResponse({"detail": f"invalid updated_since: {exc}"}, status_code=400)
        due = plan.take(record)
        by_kind = {f.kind: f for f in due}
        delay = sum(f.params["seconds"] for f in due if f.kind == "slow")
        if delay:
            await asyncio.sleep(delay)
        if "reset" in by_kind:
            await _close_connection(request, abort=True)
            return Response(status_code=499)  # never reaches the client; 499 marks it in the log
        if "status" in by_kind:
            return _fault_response(by_kind["status"])
        cut_at = by_kind["truncate"].params["bytes"] if "truncate" in by_kind else None
        cached = await cache.chunks(due) if cache is not None and updated_since is None else None
        if cached is not None:
            return StreamingResponse(_body(request, cached, cut_at), media_type="application/json")
        generated_at, view = state.extract_view()
        chunks = extract_chunks(view, format_timestamp(generated_at), updated_since, due)
        # Rows are generated on a worker thread, so the event loop stays free for other requests.
        return StreamingResponse(_body(request, iterate_in_threadpool(chunks), cut_at), media_type="application/json")

    @app.post("/_sim/faults")
    async def add_faults(request: Request) -> Response:
        try:
            added = plan.add_all(await request.json())
        except ValueError as exc:  # also a body that is not JSON
            return JSONResponse({"detail": f"invalid fault: {exc}"}, status_code=400)
        return JSONResponse({"added": [f.to_dict() for f in added], "pending": [f.to_dict() for f in plan.pending()]})

    @app.get("/_sim/faults")
    def list_faults() -> dict[str, Any]:
        return {"pending": [f.to_dict() for f in plan.pending()]}

    @app.delete("/_sim/faults")
    def clear_faults() -> dict[str, Any]:
        return {"cleared": plan.clear()}

    @app.post("/_sim/mutate")
    async def mutate(request: Request) -> Response:
        try:
            spec = await request.json() if await request.body() else {}
            events = await asyncio.to_thread(
                state.mutate, int(spec.get("n", 1)), spec.get("seed"),
                tuple(spec.get("kinds") or ("CREATED", "UPDATED", "DELETED")))
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"detail": f"invalid mutate request: {exc}"}, status_code=400)
        return JSONResponse({"events": events})

    @app.get("/_sim/stats")
    def stats() -> dict[str, Any]:
        return {
            "scale": state.scale,
            "seed": state.seed,
            "requests": plan.requests,
            "counts": state.counts(),
            "pending_faults": [f.to_dict() for f in plan.pending()],
            "recent_requests": [r.to_dict() for r in plan.log()[-50:]],
        }

    @app.get("/_sim/snapshot")
    def snapshot() -> Response:
        total = sum(state.counts().values())
        if total > SNAPSHOT_LIMIT:
            return JSONResponse({"detail": f"snapshot is for small scales: {total} rows > {SNAPSHOT_LIMIT}; "
                                           f"use {SYNC_PATH} instead"}, status_code=413)
        return JSONResponse(state.snapshot())

    return app


class SimulatorServer(BackgroundServer):
    """The simulator on a background uvicorn thread; a context manager.

    >>> with SimulatorServer(scale=200) as sim:
    ...     httpx.get(sim.url + "/model-garden/sync/all")
    """

    def __init__(
        self,
        state: ModelGardenState | None = None,
        *,
        scale: int = 100,
        seed: int = 7,
        faults: FaultPlan | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        cache_extract: bool = False,
    ):
        self.state = state if state is not None else ModelGardenState(scale=scale, seed=seed)
        self.faults = faults if faults is not None else FaultPlan()
        self.token = token
        super().__init__(create_app(self.state, self.faults, token, cache_extract), host=host, port=port, log_level=log_level,
                         name="Model Garden simulator")

    @classmethod
    def start_background(cls, **kwargs: Any) -> "SimulatorServer":
        """Construct and start; the caller stops it (or lets the process end: the thread is a daemon)."""
        return cls(**kwargs).start()


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8080,
    scale: int = 2000,
    seed: int = 7,
    token: str | None = None,
    push_url: str | None = None,
    push_secret: str | None = None,
    push_interval: float | None = None,
    *,
    events_per_push: int = 5,
    log_level: str = "info",
    cache_extract: bool = False,
) -> None:
    """Serve the simulator until interrupted; with ``push_url``, also push random changes.

    Every ``push_interval`` seconds (default 5 when ``push_url`` is set) it
    applies ``events_per_push`` random changes and POSTs their events, signed
    with ``push_secret`` if given. The extract shows the same changes. ``cache_extract`` serves the
    full extract from a rendering kept while nothing changes (benchmarks).
    """
    from garden_pipeline.simulator.push import EventPusher, PeriodicPusher

    state = ModelGardenState(scale=scale, seed=seed)
    app = create_app(state, FaultPlan(), token, cache_extract=cache_extract)
    periodic = None
    if push_url:
        pusher = EventPusher(push_url, secret=push_secret)
        periodic = PeriodicPusher(state, pusher, interval=push_interval or 5.0, changes=events_per_push)
        periodic.start()
    log.info("Model Garden simulator: %s rows (seed %s) on http://%s:%s%s", state.layout.total, seed, host, port, SYNC_PATH)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        if periodic is not None:
            periodic.stop()
