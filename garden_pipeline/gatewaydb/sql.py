"""Small helpers to build SQL from catalogue names safely (identifiers always quoted)."""

from __future__ import annotations

from psycopg import sql

from garden_pipeline.catalogue import Entity
from garden_pipeline.gatewaydb.tables import sync_schema


def ident(*parts: str) -> sql.Composable:
    return sql.Identifier(*parts)


def entity_table(schema: str, entity: Entity) -> sql.Composable:
    return sql.Identifier(schema, entity.table)


def sync_table(schema: str, name: str) -> sql.Composable:
    return sql.Identifier(sync_schema(schema), name)


def temp_table(conn, name: str, definition: str) -> None:
    """A fresh temp table ``name`` for this transaction (dropped at its end; any leftover replaced)."""
    conn.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
    conn.execute(f"CREATE TEMP TABLE {name} {definition} ON COMMIT DROP")


def columns(names, prefix: str | None = None) -> sql.Composable:
    if prefix:
        return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)
