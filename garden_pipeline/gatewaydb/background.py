"""Statements of a connection's transaction run in one thread, in order, while the caller parses on.

A landing that carries rows over (``carry_over``) alternates between Python (parsing, digesting and
matching a few thousand rows) and PostgreSQL (deleting the rows of a page range that left the window,
reading the next range, COPYing the rows staged meanwhile); each side waited for the other: 0.4 s of
a 1M-row changed landing was PostgreSQL working while the parser sat idle. Most of those statements
need no answer before the parser goes on, so they are handed to one thread that runs them in the
order given (a connection serves one statement at a time, and the order keeps their meaning).
psycopg releases the GIL while it waits for the server, so the two overlap on two cores.

The caller must not use the connection itself until ``close`` (it would wait for the lock, but its
statement would land between queued ones). A failed statement fails the transaction, and with it every
later one; ``result`` and ``close`` raise the first error, not the "transaction aborted" that follows.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import psycopg


class Background:
    def __init__(self, conn: psycopg.Connection, name: str = "statements"):
        self._conn = conn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._futures: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(cursor, *args)`` after everything submitted before it."""
        future = self._pool.submit(self._run, fn, args)
        self._futures.append(future)
        while self._futures and self._futures[0].done() and self._futures[0].exception() is None:
            self._futures.popleft()  # succeeded: nothing left to report
        return future

    def _run(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._conn.cursor() as cur:
            return fn(cur, *args)

    def result(self, future: Future) -> Any:
        """``future``'s result once it ran; the first error of anything submitted, if any failed."""
        try:
            return future.result()
        except Exception:
            self._raise_first()
            raise

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.result(self.submit(fn, *args))

    def _raise_first(self) -> None:
        for future in self._futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()

    def close(self) -> None:
        """Wait for everything submitted; raise the first error. The connection is the caller's again."""
        try:
            for future in self._futures:  # in order: the first to fail is the first error
                future.result()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """On the way out of a failure: drop what has not started, wait for what has, raise nothing."""
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._futures.clear()
