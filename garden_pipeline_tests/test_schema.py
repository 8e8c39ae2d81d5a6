"""GatewayDB's schema: migrations, the catalogue and the contract agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from garden_pipeline.catalogue import CATALOGUE, FieldType
from garden_pipeline.gatewaydb import migrate
from garden_pipeline.gatewaydb.connection import sqlalchemy_url
from garden_pipeline.gatewaydb.tables import build_metadata, sync_schema

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contract" / "model-garden.schema.json"


def test_migrations_match_catalogue(pg_url, schema):
    migrate.upgrade(pg_url, schema)
    head = ScriptDirectory.from_config(migrate.alembic_config(pg_url, schema)).get_current_head()
    assert migrate.current(pg_url, schema) == head
    metadata = build_metadata(schema)
    engine = sa.create_engine(sqlalchemy_url(pg_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, parent: type_ != "schema" or name in (schema, sync_schema(schema)),
                    "include_object": lambda obj, name, type_, reflected, compare_to: not (
                        type_ == "table" and (name == "alembic_version" or name.startswith("stage_"))
                    ),
                },
            )
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == [], "the catalogue changed without a migration"


def test_upgrade_is_idempotent_and_creates_the_contract_tables(pg_url, schema, db):
    migrate.upgrade(pg_url, schema)
    migrate._done.clear()
    migrate.upgrade(pg_url, schema)
    tables = {r[0] for r in db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()}
    assert tables == {e.table for e in CATALOGUE}
    fks = db.execute(
        """SELECT tc.table_name, kcu.column_name, ccu.table_name FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
           JOIN information_schema.constraint_column_usage ccu USING (constraint_schema, constraint_name)
           WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_schema = %s""", (schema,)).fetchall()
    from garden_pipeline.catalogue import by_name
    expected = {(e.table, col, by_name(p).table) for e in CATALOGUE for col, p in e.parents.items()}
    assert set(fks) == expected


@pytest.mark.skipif(not CONTRACT.exists(), reason=f"contract not found at {CONTRACT} (only beside a checkout of shared/)")
def test_catalogue_matches_the_contract_schema():
    contract = json.loads(CONTRACT.read_text())
    assert contract["x-extract-keys"] == {e.extract_key: e.name for e in CATALOGUE}
    assert contract["x-gateway-tables"] == {e.name: e.table for e in CATALOGUE}
    assert contract["x-parents"] == {e.name: e.parents for e in CATALOGUE if e.parents}
    assert contract["$defs"]["event"]["properties"]["entity_type"]["enum"] == [e.name for e in CATALOGUE]
    for e in CATALOGUE:
        spec = contract["$defs"][e.name]
        assert list(spec["properties"]) == list(e.field_names), e.name
        assert set(spec["required"]) == {f.name for f in e.fields if f.required}, e.name
        for f in e.fields:
            prop = spec["properties"][f.name]
            types = prop.get("type", [])
            types = types if isinstance(types, list) else [types]
            assert ("null" in types) == f.nullable, f"{e.name}.{f.name} nullability"
            if "enum" in prop:
                assert f.type is FieldType.ENUM and list(f.choices) == prop["enum"], f"{e.name}.{f.name}"
            if prop.get("pattern") == "^-?[0-9]+(\\.[0-9]+)?$":
                assert f.type is FieldType.MONEY, f"{e.name}.{f.name}"
            if prop.get("format") == "date-time":
                assert f.type is FieldType.TIMESTAMP, f"{e.name}.{f.name}"
            if "integer" in types:
                assert f.type is FieldType.INTEGER and f.minimum == prop.get("minimum"), f"{e.name}.{f.name}"
            if "maxLength" in prop:
                assert f.max_length == prop["maxLength"], f"{e.name}.{f.name}"


def test_entity_tables_leave_room_for_updates_in_place(pg_url, schema, db):
    """Migration 0003: fillfactor 90 on the entity tables, so most updates are HOT (no index entries)."""
    migrate.upgrade(pg_url, schema)
    for e in CATALOGUE:
        options = db.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                             (f'"{schema}"."{e.table}"',)).fetchone()[0]
        assert options == ["fillfactor=90"], e.table
