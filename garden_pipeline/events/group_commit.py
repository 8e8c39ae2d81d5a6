"""Group commit for single events: concurrent requests share one inbox transaction.

Every acknowledged event must be committed first, and a commit (a WAL flush) costs
far more than the insert itself. Requests arriving while a commit is in flight wait
together for the next one, so under load one flush acknowledges many events and a
lone request still goes straight through (no timer, no added latency when idle).
"""

from __future__ import annotations

import asyncio
from typing import Callable

from starlette.concurrency import run_in_threadpool

from garden_pipeline.events.envelope import ValidEvent

StoreEach = Callable[[list[ValidEvent]], list[bool]]


class GroupCommitter:
    """``await submit(event)`` returns True when stored, False for a duplicate, once committed."""

    def __init__(self, store_each: StoreEach, max_batch: int = 500, writers: int = 2):
        self._store_each = store_each
        self._max_batch = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[tuple[ValidEvent, asyncio.Future]] | None = None
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._write_loop(), name=f"inbox-writer-{i}")
                       for i in range(self._writers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def submit(self, event: ValidEvent) -> bool:
        if self._queue is None:
            raise RuntimeError("the inbox writer is not running (receiver not started)")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, future))
        return await future

    async def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def _write(self, batch: list[tuple[ValidEvent, asyncio.Future]]) -> None:
        try:
            new = await run_in_threadpool(self._store_each, [event for event, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            # Whatever broke the shared transaction must fail only its own request: retry one by one.
            for item in batch:
                await self._write([item])
            return
        for (_, future), was_new in zip(batch, new):
            if not future.done():  # the client may have gone away (request cancelled)
                future.set_result(was_new)
