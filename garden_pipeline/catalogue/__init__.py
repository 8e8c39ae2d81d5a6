"""The one catalogue of Model Garden entities; everything else is generated from it."""

from garden_pipeline.catalogue.entities import (
    CATALOGUE,
    ENTITIES,
    Entity,
    Field,
    FieldType,
    by_event_name,
    by_extract_key,
    by_name,
    children_of,
)

__all__ = [
    "CATALOGUE",
    "ENTITIES",
    "Entity",
    "Field",
    "FieldType",
    "by_event_name",
    "by_extract_key",
    "by_name",
    "children_of",
]
