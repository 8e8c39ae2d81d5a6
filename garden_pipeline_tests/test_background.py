"""The background statement queue a carrying landing hands its deletes, reads and COPYs to (gatewaydb/background.py).

What the landing relies on: statements run in the order given, inside the caller's transaction; the
caller gets control back while one runs; the error reported is the first one, not the "transaction is
aborted" every later statement then meets; and after ``abandon`` nothing more runs.
"""

from __future__ import annotations

import psycopg
import pytest

from garden_pipeline.gatewaydb.background import Background
from garden_pipeline.gatewaydb.connection import libpq_url


@pytest.fixture
def conn(pg_url):
    with psycopg.connect(libpq_url(pg_url)) as conn:
        conn.execute("CREATE TEMP TABLE log (n int)")
        conn.commit()
        yield conn


def _insert(n):
    return lambda cur: cur.execute("INSERT INTO log VALUES (%s)", (n,))


def test_statements_run_in_order_in_the_callers_transaction_while_it_goes_on(conn):
    queue = Background(conn)
    slow = queue.submit(lambda cur: cur.execute("SELECT pg_sleep(0.5)"))
    assert not slow.done()  # the caller has control back while PostgreSQL works
    for n in range(20):
        queue.submit(_insert(n))
    assert queue.call(lambda cur: cur.execute("SELECT array_agg(n ORDER BY ctid) FROM log").fetchone()[0]) == list(range(20))
    queue.close()
    conn.rollback()  # the queue's inserts were in the caller's transaction: gone with it
    assert conn.execute("SELECT count(*) FROM log").fetchone()[0] == 0


def test_the_first_error_is_reported_not_the_aborted_transaction_after_it(conn):
    queue = Background(conn)
    queue.submit(_insert(1))
    queue.submit(lambda cur: cur.execute("SELECT 1 / 0"))
    later = queue.submit(_insert(2))  # fails too: the transaction is aborted
    with pytest.raises(psycopg.errors.DivisionByZero):
        queue.result(later)
    with pytest.raises(psycopg.errors.DivisionByZero):
        queue.close()


def test_nothing_queued_runs_after_abandon(conn):
    queue = Background(conn)
    queue.submit(lambda cur: cur.execute("SELECT pg_sleep(0.3)"))
    queued = [queue.submit(_insert(n)) for n in range(5)]
    queue.abandon()  # waits for the sleep, drops the inserts
    assert all(f.cancelled() for f in queued)
    assert conn.execute("SELECT count(*) FROM log").fetchone()[0] == 0
    with pytest.raises(RuntimeError):
        queue.submit(_insert(9))  # and nothing can be queued any more
