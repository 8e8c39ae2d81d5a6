"""The eight Model Garden entities as the contract (shared/contract) defines them.

This module is the single source of truth for entity names, extract keys,
GatewayDB table names, event names, fields, SQL types and parents. The
GatewayDB schema, the row validator, the Dagster assets, the event validation
and the simulator are all generated from ``CATALOGUE``; a test compares it
with the contract's JSON Schema so the two cannot drift apart silently.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property


class FieldType(str, enum.Enum):
    """Contract value kinds, each with exactly one SQL type in GatewayDB."""

    ID = "id"  # string, 1..128 chars
    TEXT = "text"  # non-empty string (min_length 1 unless stated)
    ENUM = "enum"
    MONEY = "money"  # decimal string "1500.00", never a float
    CURRENCY = "currency"  # ^[A-Z]{3}$
    TIMESTAMP = "timestamp"  # RFC 3339
    INTEGER = "integer"
    NUMBER = "number"  # JSON number (exact, kept as numeric)
    URI = "uri"
    TEXT_ARRAY = "text_array"

    @property
    def sql_type(self) -> str:
        return _SQL_TYPES[self]


_SQL_TYPES = {
    FieldType.ID: "text",
    FieldType.TEXT: "text",
    FieldType.ENUM: "text",
    FieldType.MONEY: "numeric",
    FieldType.CURRENCY: "text",
    FieldType.TIMESTAMP: "timestamptz",
    FieldType.INTEGER: "bigint",
    FieldType.NUMBER: "numeric",
    FieldType.URI: "text",
    FieldType.TEXT_ARRAY: "text[]",
}


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool = True
    nullable: bool = False
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()
    parent: str | None = None  # entity name this field references

    @property
    def sql_nullable(self) -> bool:
        return self.nullable or not self.required


@dataclass(frozen=True)
class Entity:
    """One Model Garden entity and every name it goes by."""

    name: str  # entity_type in events
    extract_key: str  # key in /sync/all
    table: str  # GatewayDB table
    plural: str  # asset and display name
    fields: tuple[Field, ...] = field(default_factory=tuple)

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def fields_by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @cached_property
    def parents(self) -> dict[str, str]:
        """Foreign-key column -> parent entity name."""
        return {f.name: f.parent for f in self.fields if f.parent}

    @cached_property
    def data_fields(self) -> tuple[str, ...]:
        """Fields compared to decide whether a row changed (all but id)."""
        return tuple(n for n in self.field_names if n != "id")


def _id(name: str = "id", parent: str | None = None) -> Field:
    return Field(name, FieldType.ID, min_length=1, max_length=128, parent=parent)


def _text(name: str, *, required: bool = True, nullable: bool = False, min_length: int | None = 1) -> Field:
    return Field(name, FieldType.TEXT, required=required, nullable=nullable, min_length=min_length)


def _enum(name: str, *choices: str) -> Field:
    return Field(name, FieldType.ENUM, choices=choices)


def _ts(name: str, *, required: bool = True, nullable: bool = False) -> Field:
    return Field(name, FieldType.TIMESTAMP, required=required, nullable=nullable)


_TIMES = (_ts("created_time"), _ts("updated_time"))

CATALOGUE: tuple[Entity, ...] = (
    Entity(
        "project",
        "projects",
        "projects",
        "projects",
        (_id(), _text("project_name"), _text("project_code"), *_TIMES),
    ),
    Entity(
        "use_case",
        "use_cases",
        "use_cases",
        "use_cases",
        (
            _id(),
            _id("project_id", parent="project"),
            _text("use_case_name"),
            _text("use_case_code"),
            _text("description", required=False, nullable=True, min_length=None),
            _enum("status", "active", "inactive"),
            *_TIMES,
        ),
    ),
    Entity(
        "use_case_budget",
        "budgets",
        "use_case_budgets",
        "use_case_budgets",
        (
            _id(),
            _id("use_case_id", parent="use_case"),
            Field("budget_amount", FieldType.MONEY),
            Field("currency", FieldType.CURRENCY),
            _enum("period", "daily", "monthly", "quarterly", "yearly"),
            Field("alert_threshold", FieldType.NUMBER, required=False, minimum=0, maximum=1),
            *_TIMES,
        ),
    ),
    Entity(
        "model",
        "models",
        "models",
        "models",
        (
            _id(),
            _text("model_name"),
            _text("provider"),
            _text("model_family", min_length=None),
            _text("model_version", required=False, nullable=True, min_length=None),
            Field("capabilities", FieldType.TEXT_ARRAY),
            Field("context_window", FieldType.INTEGER, minimum=1),
            Field("max_output_tokens", FieldType.INTEGER, required=False, nullable=True, minimum=1),
            _enum("status", "ga", "preview", "deprecated"),
            *_TIMES,
        ),
    ),
    Entity(
        "model_deployment",
        "model_deployments",
        "model_deployments",
        "model_deployments",
        (
            _id(),
            _id("model_id", parent="model"),
            _text("deployment_name"),
            _text("region"),
            Field("endpoint_url", FieldType.URI),
            _enum("status", "active", "inactive", "draining"),
            *_TIMES,
        ),
    ),
    Entity(
        "llm_model_pricing",
        "pricing",
        "llm_model_pricing",
        "llm_model_pricing",
        (
            _id(),
            _id("model_id", parent="model"),
            Field("input_price_per_1k_tokens", FieldType.MONEY),
            Field("output_price_per_1k_tokens", FieldType.MONEY),
            Field("currency", FieldType.CURRENCY),
            _ts("effective_from"),
            _ts("effective_to", required=False, nullable=True),
            *_TIMES,
        ),
    ),
    Entity(
        "subscription",
        "use_case_llm_models",
        "subscriptions",
        "subscriptions",
        (
            _id(),
            _id("use_case_id", parent="use_case"),
            _id("model_id", parent="model"),
            _enum("status", "active", "suspended"),
            *_TIMES,
        ),
    ),
    Entity(
        "llm_model_limit",
        "limits",
        "llm_model_limits",
        "llm_model_limits",
        (
            _id(),
            _id("subscription_id", parent="subscription"),
            Field("requests_per_minute", FieldType.INTEGER, minimum=0),
            Field("tokens_per_minute", FieldType.INTEGER, minimum=0),
            Field("tokens_per_day", FieldType.INTEGER, required=False, nullable=True, minimum=0),
            *_TIMES,
        ),
    ),
)

# Foreign-key (write) order; deletes go the other way.
ENTITIES: tuple[str, ...] = tuple(e.name for e in CATALOGUE)

_BY_NAME = {e.name: e for e in CATALOGUE}
_BY_EXTRACT_KEY = {e.extract_key: e for e in CATALOGUE}


def by_name(name: str) -> Entity:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}; known: {', '.join(ENTITIES)}") from None


by_event_name = by_name  # events use the entity name as entity_type


def by_extract_key(key: str) -> Entity | None:
    return _BY_EXTRACT_KEY.get(key)


def children_of(name: str) -> tuple[Entity, ...]:
    return tuple(e for e in CATALOGUE if name in e.parents.values())


def _check_order() -> None:
    seen: set[str] = set()
    for e in CATALOGUE:
        missing = set(e.parents.values()) - seen
        assert not missing, f"{e.name} listed before its parents {missing}"
        seen.add(e.name)


_check_order()
