"""How many rows each entity has at a given scale, their ids, and who their parents are.

Parents are assigned arithmetically rather than at random so that both
directions are cheap without storing anything: a child's parent index is a
formula of the child's index, and the children of a parent can be enumerated
by inverting it (needed for cascading deletes at a million rows).

* one parent:  parent = i % P
* two parents: r = i % P0, b = i // P0; parent0 = r, parent1 = (b + r) % P1.
  The row count is capped at P0 * P1, so b < P1 and every (parent0, parent1)
  pair occurs at most once: a use case subscribes to a model only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from garden_pipeline.catalogue import CATALOGUE, Entity, by_extract_key, by_name

# Share of `scale` per entity: many subscriptions and limits, few models.
SHARES: dict[str, float] = {
    "project": 0.01,
    "use_case": 0.04,
    "use_case_budget": 0.04,
    "model": 0.001,
    "model_deployment": 0.003,
    "llm_model_pricing": 0.003,
    "subscription": 0.45,
    "llm_model_limit": 0.45,
}
DEFAULT_SHARE = 0.01  # an entity added to the catalogue later still gets rows
MINIMUMS: dict[str, int] = {"model": 3}

# Id prefixes as in the contract's examples; any other entity uses its initials.
ID_PREFIXES: dict[str, str] = {
    "project": "proj",
    "use_case": "uc",
    "use_case_budget": "bud",
    "model": "mdl",
    "model_deployment": "dep",
    "llm_model_pricing": "price",
    "subscription": "sub",
    "llm_model_limit": "lim",
}
ID_DIGITS = 7


def _prefix(entity: Entity) -> str:
    return ID_PREFIXES.get(entity.name) or "".join(word[0] for word in entity.name.split("_"))


@dataclass(frozen=True)
class _ParentRef:
    field: str
    entity: str
    position: int  # 0 or 1: which formula of the module docstring applies


class Layout:
    """Row counts, ids and parent arithmetic for one scale."""

    def __init__(self, scale: int):
        if scale < 1:
            raise ValueError(f"scale must be at least 1, got {scale}")
        self.scale = scale
        self.counts: dict[str, int] = {}
        self.prefixes: dict[str, str] = {e.name: _prefix(e) for e in CATALOGUE}
        self._parents: dict[str, tuple[_ParentRef, ...]] = {}
        for entity in CATALOGUE:  # catalogue order: parents are counted before children
            refs = tuple(_ParentRef(f, p, k) for k, (f, p) in enumerate(entity.parents.items()))
            if len(refs) > 2:
                raise NotImplementedError(f"{entity.name}: the simulator handles at most two parents")
            count = max(MINIMUMS.get(entity.name, 1), round(SHARES.get(entity.name, DEFAULT_SHARE) * scale))
            if len(refs) == 2:
                count = min(count, self.counts[refs[0].entity] * self.counts[refs[1].entity])
            self.counts[entity.name] = count
            self._parents[entity.name] = refs

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, entity: str) -> int:
        return self.counts[entity]

    def parent_refs(self, entity: str) -> tuple[_ParentRef, ...]:
        return self._parents[entity]

    # ids -------------------------------------------------------------------
    def format_id(self, entity: str, index: int) -> str:
        return f"{self.prefixes[entity]}-{index + 1:0{ID_DIGITS}d}"

    def parse_id(self, entity: str, entity_id: str) -> int | None:
        """Index of an id this layout could have issued (base or created), else None."""
        prefix = self.prefixes[entity] + "-"
        if not isinstance(entity_id, str) or not entity_id.startswith(prefix):
            return None
        digits = entity_id[len(prefix):]
        if not digits.isdigit():
            return None
        index = int(digits) - 1
        if index < 0 or self.format_id(entity, index) != entity_id:
            return None
        return index

    # parents -----------------------------------------------------------------
    def parent_index(self, entity: str, ref: _ParentRef, index: int) -> int:
        p0 = self.counts[self._parents[entity][0].entity]
        r = index % p0
        if ref.position == 0:
            return r
        return (index // p0 + r) % self.counts[ref.entity]

    def base_children(self, entity: str, ref: _ParentRef, parent_index: int) -> Iterator[int]:
        """Base indices of ``entity`` whose generated ``ref.field`` points at ``parent_index``."""
        n = self.counts[entity]
        p0 = self.counts[self._parents[entity][0].entity]
        if ref.position == 0:
            yield from range(parent_index, n, p0)
            return
        p1 = self.counts[ref.entity]
        for block in range((n + p0 - 1) // p0):
            start = block * p0
            for r in range((parent_index - block) % p1, p0, p1):
                if start + r >= n:
                    break
                yield start + r


def entity_of(name: str) -> Entity:
    """Catalogue entity by entity name or extract key."""
    found = by_extract_key(name)
    return found if found is not None else by_name(name)
