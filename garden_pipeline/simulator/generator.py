"""Base rows: row i of an entity is a pure function of (seed, scale, entity, i).

Nothing is stored: the extract, ``get`` and cascade lookups all regenerate a
row when they need it. A per-entity plan, built once from the catalogue, says
how each field is filled so the per-row loop has no decisions left to make.
"""

from __future__ import annotations

from typing import Any, Callable

from garden_pipeline.catalogue import CATALOGUE, Entity
from garden_pipeline.simulator.clock import format_epoch_seconds
from garden_pipeline.simulator.layout import Layout
from garden_pipeline.simulator.rowrandom import RowRandom, mix64, stream_key
from garden_pipeline.simulator.vocabulary import BASE_END, BASE_START, maker_for

CREATED, UPDATED = "created_time", "updated_time"
RECORD_TIMES = (CREATED, UPDATED)
_SPAN = BASE_END - BASE_START
_MASK = (1 << 64) - 1
_TIME_STRIDE = 0x9FB21C651E98DF25


class RowGenerator:
    """Generates base rows and fresh field values, driven by the catalogue."""

    def __init__(self, seed: int, layout: Layout):
        self.seed = seed
        self.layout = layout
        self._row_keys = {e.name: stream_key(seed, e.name, "row") for e in CATALOGUE}
        self._time_keys = {e.name: stream_key(seed, e.name, "times") for e in CATALOGUE}
        self._plans = {e.name: self._plan(e) for e in CATALOGUE}
        self._makers = {e.name: {f.name: maker_for(f) for f in e.fields if self._is_value(e, f.name)} for e in CATALOGUE}

    @staticmethod
    def _is_value(entity: Entity, name: str) -> bool:
        return name != "id" and name not in entity.parents and name not in RECORD_TIMES

    def _plan(self, entity: Entity) -> list[tuple[str, Callable[[int, RowRandom, dict, tuple[int, int]], Any]]]:
        layout, name = self.layout, entity.name
        refs = {ref.field: ref for ref in layout.parent_refs(name)}
        plan = []
        for field in entity.fields:
            if field.name == "id":
                plan.append((field.name, lambda i, rnd, ctx, t: layout.format_id(name, i)))
            elif field.name in refs:
                ref = refs[field.name]
                plan.append((field.name, lambda i, rnd, ctx, t, ref=ref: layout.format_id(
                    ref.entity, layout.parent_index(name, ref, i))))
            elif field.name == CREATED:
                plan.append((field.name, lambda i, rnd, ctx, t: format_epoch_seconds(t[0])))
            elif field.name == UPDATED:
                plan.append((field.name, lambda i, rnd, ctx, t: format_epoch_seconds(t[1])))
            else:
                maker = maker_for(field)
                plan.append((field.name, lambda i, rnd, ctx, t, maker=maker: maker(rnd, i, ctx)))
        return plan

    def base_times(self, entity: str, index: int) -> tuple[int, int]:
        """(created, updated) unix seconds of base row ``index``, without building the row."""
        h = mix64((self._time_keys[entity] + index * _TIME_STRIDE) & _MASK)
        created = BASE_START + h % _SPAN
        if (h >> 40) % 10 < 4:  # four rows in ten were never edited after creation
            return created, created
        return created, created + (h >> 20) % (BASE_END - created)

    def row(self, entity: str, index: int) -> dict:
        rnd = RowRandom.for_row(self._row_keys[entity], index)
        times = self.base_times(entity, index)
        ctx: dict = {}
        return {name: fill(index, rnd, ctx, times) for name, fill in self._plans[entity]}

    def value_fields(self, entity: str) -> tuple[str, ...]:
        """Fields an update may change: all but id, parent keys and the record times."""
        return tuple(self._makers[entity])

    def fresh_values(self, entity: str, index: int, rnd: RowRandom, fields: tuple[str, ...] | None = None) -> dict:
        """New values for ``fields`` (default: all value fields) of row ``index``."""
        makers = self._makers[entity]
        ctx: dict = {}
        # Makers fill ctx for related fields, so run them all and keep those asked for.
        values = {name: make(rnd, index, ctx) for name, make in makers.items()}
        return values if fields is None else {k: values[k] for k in fields}
