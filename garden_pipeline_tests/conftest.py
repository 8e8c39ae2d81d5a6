"""Shared fixtures: real PostgreSQL and real Redis, from the environment or embedded.

GATEWAY_DB_URL / REDIS_URL name the servers when set (CI points them at the
machine's services); otherwise the tests start the embedded ones, so the
README's test command passes on a machine with no servers installed. Each
test gets its own GatewayDB schema and Redis stream, so tests never see each
other's rows.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from garden_pipeline.gatewaydb.connection import libpq_url
from garden_pipeline.gatewaydb.tables import sync_schema


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    url = os.environ.get("GATEWAY_DB_URL")
    if url:
        return url
    from garden_pipeline.embedded.postgres import embedded_postgres_url

    return embedded_postgres_url(tmp_path_factory.mktemp("pg") / "pgdata")


@pytest.fixture(scope="session")
def redis_url_or_file(tmp_path_factory) -> tuple[str | None, str | None]:
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    return None, str(tmp_path_factory.mktemp("redis") / "test.rdb")


@pytest.fixture
def redis_client(redis_url_or_file) -> redis.Redis:
    url, file = redis_url_or_file
    if url:
        return redis.Redis.from_url(url, decode_responses=True)
    from garden_pipeline.embedded.redis import embedded_redis

    return embedded_redis(Path(file))


@contextlib.contextmanager
def _throwaway_schema(pg_url):
    name = f"t_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{sync_schema(name)}" CASCADE')


@pytest.fixture
def schema(pg_url):
    with _throwaway_schema(pg_url) as name:
        yield name


@pytest.fixture
def other_schema(pg_url):
    """A second GatewayDB schema, for a test that runs two set-ups side by side."""
    with _throwaway_schema(pg_url) as name:
        yield name


@pytest.fixture
def stream_name() -> str:
    return f"test:sync:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(pg_url):
    """A plain autocommit connection for assertions."""
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def sim_params() -> dict:
    """Scale and seed of the simulated Model Garden; a test module may override this fixture."""
    return {"scale": 300, "seed": 7}


@pytest.fixture
def sim(sim_params):
    from garden_pipeline.simulator import SimulatorServer

    with SimulatorServer(**sim_params) as server:
        yield server


@pytest.fixture
def stack(pg_url, schema, sim, redis_url_or_file, stream_name):
    """The real assets wired to this test's schema, stream and simulator."""
    from garden_pipeline_tests.harness import Stack

    return Stack(pg_url, schema, sim.url, redis_url_or_file, stream_name)
