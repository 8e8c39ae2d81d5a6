"""The simulated Model Garden registry: a lazily generated base plus an overlay of changes.

Row i of an entity is a pure function of (seed, scale, entity, i) and is
generated when read, so a million-row registry costs almost no memory. Changes
(create, update, delete) go into a small overlay and come back as
contract-shaped events, so the same changes can be served by ``/sync/all`` and
pushed to the pipeline's event receiver.
"""

from __future__ import annotations

import random
import threading
from datetime import datetime
from typing import Callable, Iterable, Iterator

from garden_pipeline.catalogue import CATALOGUE, Entity
from garden_pipeline.simulator.change_events import EVENT_TYPES, change_event
from garden_pipeline.simulator.clock import MonotonicClock, format_timestamp
from garden_pipeline.simulator.generator import RECORD_TIMES, UPDATED, RowGenerator
from garden_pipeline.simulator.layout import DEFAULT_SHARE, SHARES, Layout, entity_of
from garden_pipeline.simulator.rowrandom import RowRandom
from garden_pipeline.simulator.view import StateView

_PICK_ATTEMPTS = 64


class _Impossible(ValueError):
    """This random change cannot be made now (e.g. no live parent); try another."""


class ModelGardenState:
    """Model Garden's data at ``scale`` rows (approximately, over all eight entities)."""

    def __init__(self, scale: int = 100, seed: int = 7, clock: Callable[[], datetime] | None = None):
        self.scale = scale
        self.seed = seed
        self.layout = Layout(scale)
        self.generator = RowGenerator(seed, self.layout)
        self._clock = MonotonicClock(clock)
        # One re-entrant lock: a delete cascades through nested deletes.
        self._lock = threading.RLock()
        self._changed: dict[str, dict[int, dict]] = {e.name: {} for e in CATALOGUE}
        self._deleted: dict[str, set[int]] = {e.name: set() for e in CATALOGUE}
        self._next_index = {e.name: self.layout.count(e.name) for e in CATALOGUE}
        self._live = StateView(self.generator, self._changed, self._deleted)
        self._rng = random.Random(seed)
        self.version = 0  # bumped by every change; tells a cached rendering of the extract is still current

    # time ---------------------------------------------------------------------------
    def now(self) -> datetime:
        """Current UTC time, strictly later than any earlier reading."""
        return self._clock.now()

    # reading ------------------------------------------------------------------------
    def view(self) -> StateView:
        """A consistent read-only view; later changes do not show in it."""
        with self._lock:
            return self._copy_view()

    def _copy_view(self) -> StateView:
        # The overlay is small; copying it (not the rows, which are replaced, never edited) is cheap.
        changed = {name: dict(rows) for name, rows in self._changed.items()}
        deleted = {name: set(ids) for name, ids in self._deleted.items()}
        return StateView(self.generator, changed, deleted)

    def extract_view(self) -> tuple[datetime, StateView]:
        """(generated_at, view) taken together, so generated_at is a safe next watermark."""
        with self._lock:
            return self.now(), self._copy_view()

    def versioned_view(self) -> tuple[int, StateView]:
        """(version, view) taken together."""
        with self._lock:
            return self.version, self._copy_view()

    def stamp_if_unchanged(self, version: int) -> datetime | None:
        """A fresh generated_at if the state is still at ``version`` (else None), taken under the lock."""
        with self._lock:
            return self.now() if self.version == version else None

    def rows(self, entity_name: str, updated_since: datetime | None = None) -> Iterator[dict]:
        return self.view().rows(entity_name, updated_since)

    def snapshot(self) -> dict[str, dict[str, dict]]:
        return self.view().snapshot()

    def get(self, entity: str, entity_id: str) -> dict | None:
        with self._lock:
            return self._live.get(entity, entity_id)

    def count(self, entity: str) -> int:
        with self._lock:
            return self._live.count(entity)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._live.counts()

    # explicit changes -------------------------------------------------------------
    def create(self, entity: str, **overrides) -> list[dict]:
        """Create one row (random values unless overridden; parents random unless given)."""
        with self._lock:
            return self._create(entity_of(entity), self._rng, overrides)

    def update(self, entity: str, entity_id: str, **changes) -> list[dict]:
        """Change a live row (random value fields if no changes are given)."""
        with self._lock:
            e = entity_of(entity)
            return self._update(e, self._live_index(e, entity_id), self._rng, changes)

    def delete(self, entity: str, entity_id: str) -> list[dict]:
        """Delete a live row and, first, every live descendant: one DELETED event each."""
        with self._lock:
            e = entity_of(entity)
            return self._delete(e.name, self._live_index(e, entity_id))

    # random changes -------------------------------------------------------------------
    def mutate(
        self,
        n: int,
        rng_seed: int | None = None,
        kinds: Iterable[str] = EVENT_TYPES,
    ) -> list[dict]:
        """Apply ``n`` random changes; return their events (a cascading delete adds more)."""
        kinds = tuple(kinds)
        unknown = set(kinds) - set(EVENT_TYPES)
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {EVENT_TYPES}, got {kinds}")
        rng = random.Random(rng_seed) if rng_seed is not None else self._rng
        names = [e.name for e in CATALOGUE]
        # Changes fall mostly on the big entities, like real edits; every entity still gets some.
        weights = [max(SHARES.get(name, DEFAULT_SHARE), 0.02) for name in names]
        events: list[dict] = []
        with self._lock:
            for _ in range(n):
                kind = rng.choice(kinds)
                for _attempt in range(20):
                    entity = entity_of(rng.choices(names, weights)[0])
                    try:
                        events.extend(self._random_change(kind, entity, rng))
                        break
                    except _Impossible:
                        continue
        return events

    def _random_change(self, kind: str, entity: Entity, rng: random.Random) -> list[dict]:
        if kind == "CREATED":
            return self._create(entity, rng, {})
        index = self._pick_live(entity.name, rng)
        if kind == "UPDATED":
            return self._update(entity, index, rng, {})
        return self._delete(entity.name, index)

    # internals (caller holds the lock) --------------------------------------------------
    def _live_index(self, entity: Entity, entity_id: str) -> int:
        index = self._live.index_of(entity.name, entity_id)
        if index is None or not self._live.is_live(entity.name, index):
            raise KeyError(f"no live {entity.name} with id {entity_id!r}")
        return index

    def _pick_live(self, entity: str, rng: random.Random) -> int:
        space = self._next_index[entity]
        if space:
            for _ in range(_PICK_ATTEMPTS):
                index = rng.randrange(space)
                if self._live.is_live(entity, index):
                    return index
        # Random probing failed: the entity is (almost) empty, so a scan is cheap.
        live = [i for i in range(space) if self._live.is_live(entity, i)]
        if not live:
            raise _Impossible(f"no live {entity}")
        return rng.choice(live)

    def _stamp(self) -> str:
        self.version += 1  # every change is stamped, so every change passes here
        return format_timestamp(self.now())

    def _check_fields(self, entity: Entity, values: dict) -> None:
        unknown = set(values) - set(entity.field_names)
        if unknown:
            raise ValueError(f"{entity.name} has no field(s) {sorted(unknown)}")
        fixed = set(values) & {"id", *RECORD_TIMES}
        if fixed:
            raise ValueError(f"{sorted(fixed)} are set by the simulator, not by the caller")

    def _parent_ids(self, entity: Entity, rng: random.Random, given: dict) -> dict[str, str]:
        refs = self.layout.parent_refs(entity.name)
        for field in given:
            if field in entity.parents:
                self._live_index(entity_of(entity.parents[field]), given[field])
        for _ in range(10):
            ids = {
                ref.field: given.get(ref.field)
                or self.layout.format_id(ref.entity, self._pick_live(ref.entity, rng))
                for ref in refs
            }
            # Two parents form a natural key (a use case subscribes to a model once).
            if len(refs) < 2 or not self._pair_taken(entity, ids):
                return ids
            if all(ref.field in given for ref in refs):
                raise ValueError(f"a live {entity.name} already links {ids}")
        raise _Impossible(f"no free parent combination for {entity.name}")

    def _pair_taken(self, entity: Entity, ids: dict[str, str]) -> bool:
        first = self.layout.parent_refs(entity.name)[0]
        parent_index = self.layout.parse_id(first.entity, ids[first.field])
        for child, ci in self._live.live_children(first.entity, parent_index):
            if child == entity.name:
                row = self._live.row_at(child, ci)
                if all(row.get(f) == v for f, v in ids.items()):
                    return True
        return False

    def _create(self, entity: Entity, rng: random.Random, overrides: dict) -> list[dict]:
        self._check_fields(entity, overrides)
        name = entity.name
        parents = self._parent_ids(entity, rng, overrides)
        index = self._next_index[name]
        values = self.generator.fresh_values(name, index, RowRandom(rng.getrandbits(64)))
        stamp = self._stamp()
        row: dict = {}
        for field in entity.field_names:  # catalogue order, like generated rows
            if field == "id":
                row[field] = self.layout.format_id(name, index)
            elif field in parents:
                row[field] = parents[field]
            elif field in RECORD_TIMES:
                row[field] = stamp
            else:
                row[field] = overrides.get(field, values[field])
        self._next_index[name] = index + 1
        self._changed[name][index] = row
        return [change_event("CREATED", name, row["id"], stamp, dict(row))]

    def _update(self, entity: Entity, index: int, rng: random.Random, changes: dict) -> list[dict]:
        self._check_fields(entity, changes)
        name = entity.name
        current = self._live.row_at(name, index)
        for field, value in changes.items():
            if field in entity.parents:
                self._live_index(entity_of(entity.parents[field]), value)
        if not changes:
            changes = self._random_changes(name, index, current, rng)
        row = {**current, **changes}
        row[UPDATED] = stamp = self._stamp()
        self._changed[name][index] = row
        return [change_event("UPDATED", name, row["id"], stamp, dict(row))]

    def _random_changes(self, entity: str, index: int, current: dict, rng: random.Random) -> dict:
        fields = self.generator.value_fields(entity)
        for _ in range(8):
            picked = rng.sample(fields, min(len(fields), rng.choice((1, 1, 2))))
            fresh = self.generator.fresh_values(entity, index, RowRandom(rng.getrandbits(64)), tuple(picked))
            differing = {k: v for k, v in fresh.items() if v != current.get(k)}
            if differing:
                return differing
        return {}  # some fields are fixed by the row number; a touch (new updated_time) is still an update

    def _delete(self, entity: str, index: int) -> list[dict]:
        events: list[dict] = []
        # Children first, so a consumer applying events in order never sees an orphan.
        for child, child_index in self._live.live_children(entity, index):
            if self._live.is_live(child, child_index):
                events.extend(self._delete(child, child_index))
        entity_id = self.layout.format_id(entity, index)
        self._changed[entity].pop(index, None)
        self._deleted[entity].add(index)
        events.append(change_event("DELETED", entity, entity_id, self._stamp(), {"id": entity_id}))
        return events


__all__ = ["ModelGardenState"]
