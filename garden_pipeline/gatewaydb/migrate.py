"""Apply GatewayDB's Alembic migrations; the pipeline calls this itself before writing."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
_done: set[tuple[str, str]] = set()
_lock = threading.Lock()


def alembic_config(url: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["url"] = url
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(url: str, schema: str, revision: str = "head") -> None:
    """Bring ``schema`` to ``revision``; cheap after the first call in a process."""
    key = (url, schema)
    with _lock:
        if revision == "head" and key in _done:
            return
        command.upgrade(alembic_config(url, schema), revision)
        if revision == "head":
            _done.add(key)


def current(url: str, schema: str) -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from garden_pipeline.gatewaydb.connection import sqlalchemy_url
    from garden_pipeline.gatewaydb.tables import sync_schema

    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT to_regclass(:t)"), {"t": f'"{sync_schema(schema)}".alembic_version'}
            ).scalar()
            if not exists:
                return None
            return conn.execute(text(f'SELECT version_num FROM "{sync_schema(schema)}".alembic_version')).scalar()
    finally:
        engine.dispose()
