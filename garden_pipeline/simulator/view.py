"""Reading the simulated registry: the generated base rows seen through the overlay.

State = base + overlay. The overlay holds, per entity, the rows that were
created or changed (keyed by row index) and the indices that were deleted.
A :class:`StateView` over a *copy* of the overlay is a consistent snapshot:
an extract can stream from it while mutations carry on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from garden_pipeline.catalogue import CATALOGUE, children_of
from garden_pipeline.simulator.clock import parse_timestamp, to_micros
from garden_pipeline.simulator.generator import RowGenerator
from garden_pipeline.simulator.layout import entity_of
from garden_pipeline.simulator.vocabulary import BASE_END

_BASE_END_MICROS = BASE_END * 1_000_000


def _copy(row: dict) -> dict:
    # Callers (fault injection, tests) may edit what they get; the overlay must not change.
    return {k: list(v) if isinstance(v, list) else v for k, v in row.items()}


def _since_micros(updated_since: datetime | str | None) -> int | None:
    if updated_since is None:
        return None
    if isinstance(updated_since, str):
        updated_since = parse_timestamp(updated_since)
    return to_micros(updated_since)


class StateView:
    """Read access to base + overlay; ``changed``/``deleted`` are per entity name, by row index."""

    def __init__(
        self,
        generator: RowGenerator,
        changed: dict[str, dict[int, dict]],
        deleted: dict[str, set[int]],
    ):
        self.generator = generator
        self.layout = generator.layout
        self.changed = changed
        self.deleted = deleted

    # single rows -------------------------------------------------------------------
    def is_live(self, entity: str, index: int) -> bool:
        if index in self.deleted[entity]:
            return False
        return index < self.layout.count(entity) or index in self.changed[entity]

    def row_at(self, entity: str, index: int) -> dict | None:
        """The live row with this index, or None; the overlay's own dict (do not edit)."""
        if not self.is_live(entity, index):
            return None
        row = self.changed[entity].get(index)
        return row if row is not None else self.generator.row(entity, index)

    def index_of(self, entity: str, entity_id: str) -> int | None:
        return self.layout.parse_id(entity, entity_id)

    def get(self, entity: str, entity_id: str) -> dict | None:
        name = entity_of(entity).name
        index = self.index_of(name, entity_id)
        row = None if index is None else self.row_at(name, index)
        return None if row is None else _copy(row)

    def count(self, entity: str) -> int:
        name = entity_of(entity).name
        base = self.layout.count(name)
        deleted_base = sum(1 for i in self.deleted[name] if i < base)
        created = sum(1 for i in self.changed[name] if i >= base)
        return base - deleted_base + created

    def counts(self) -> dict[str, int]:
        return {e.name: self.count(e.name) for e in CATALOGUE}

    # many rows ------------------------------------------------------------------------
    def rows(self, entity: str, updated_since: datetime | str | None = None) -> Iterator[dict]:
        """Live rows in id order, only those with ``updated_time >= updated_since`` if given.

        Base rows are generated one at a time, so memory does not grow with scale.
        """
        name = entity_of(entity).name
        since = _since_micros(updated_since)
        base = self.layout.count(name)
        changed, deleted = self.changed[name], self.deleted[name]
        if since is None or since <= _BASE_END_MICROS:
            generator = self.generator
            for i in range(base):
                if i in deleted:
                    continue
                row = changed.get(i)
                if row is not None:
                    if since is None or self._micros(row) >= since:
                        yield _copy(row)
                elif since is None or generator.base_times(name, i)[1] * 1_000_000 >= since:
                    yield generator.row(name, i)
        else:
            # Every generated row was last updated before BASE_END: only edited ones qualify.
            for i in sorted(k for k in changed if k < base):
                if self._micros(changed[i]) >= since:
                    yield _copy(changed[i])
        for i in sorted(k for k in changed if k >= base):
            if since is None or self._micros(changed[i]) >= since:
                yield _copy(changed[i])

    @staticmethod
    def _micros(row: dict) -> int:
        return to_micros(parse_timestamp(row["updated_time"]))

    def snapshot(self) -> dict[str, dict[str, dict]]:
        """entity name -> id -> row, for every live row. Meant for small scales (tests)."""
        return {e.name: {row["id"]: row for row in self.rows(e.name)} for e in CATALOGUE}

    # relations ----------------------------------------------------------------------
    def live_children(self, entity: str, index: int) -> list[tuple[str, int]]:
        """(child entity, child index) of every live row whose parent key points at this row."""
        layout = self.layout
        parent_id = layout.format_id(entity, index)
        found: list[tuple[str, int]] = []
        for child in children_of(entity):
            for ref in layout.parent_refs(child.name):
                if ref.entity != entity:
                    continue
                changed, deleted = self.changed[child.name], self.deleted[child.name]
                seen: set[int] = set()
                if index < layout.count(entity):  # only generated parents have generated children
                    for ci in layout.base_children(child.name, ref, index):
                        if ci in deleted:
                            continue
                        row = changed.get(ci)
                        if row is not None and row.get(ref.field) != parent_id:
                            continue  # re-parented by an update
                        seen.add(ci)
                        found.append((child.name, ci))
                for ci, row in changed.items():
                    if ci not in seen and row.get(ref.field) == parent_id:
                        found.append((child.name, ci))
        return found
