"""The fault plan: what goes wrong on upcoming ``/model-garden/sync/all`` requests.

A fault is ``{"kind": ..., "times": 1, "skip": 0, **params}``: it affects the
next ``times`` requests after letting ``skip`` requests through. All faults
due on a request apply to it together (e.g. ``extra_fields`` + ``invalid_rows``);
``skip`` lines them up one after another (a 429, then a cut-off body).

Shorthand: ``{"status": 429, "retry_after": 2}``, ``{"slow": 5}``,
``{"truncate": 2048}``, ``{"reset": true}``, ``{"invalid_json": true}``,
``{"empty": true}``, ``{"drop_fraction": {"entity": "project", "fraction": 0.5}}``,
``{"extra_fields": {"entity": "model", "fields": {"x": 1}}}``,
``{"invalid_rows": {"entity": "pricing", "count": 2, "kind": "bad_money"}}`` (canonically
``{"kind": "invalid_rows", "entity": "pricing", "count": 2, "error": "bad_money"}``),
``{"duplicate_ids": {"entity": "subscription", "count": 3}}``.

The plan also counts and logs every request, so retry tests can assert how
many attempts arrived.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from garden_pipeline.catalogue import FieldType
from garden_pipeline.simulator.layout import entity_of

INVALID_ROW_KINDS = ("missing_field", "wrong_type", "bad_money", "dangling_parent")
# kind -> the parameter a bare shorthand value stands for
FAULT_KINDS: dict[str, str | None] = {
    "status": "status",
    "slow": "seconds",
    "truncate": "bytes",
    "invalid_json": None,
    "reset": None,
    "empty": None,
    "drop_fraction": None,
    "extra_fields": None,
    "invalid_rows": None,
    "duplicate_ids": None,
}
TRANSPORT_KINDS = ("status", "slow", "truncate", "invalid_json", "reset")
LOG_LIMIT = 1000  # request records kept


@dataclass
class Fault:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    times: int = 1
    skip: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "times": self.times, "skip": self.skip, **self.params}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "Fault":
        """Parse the canonical form or a shorthand (see module docstring); ValueError if invalid."""
        if not isinstance(spec, dict):
            raise ValueError(f"a fault is a JSON object, got {type(spec).__name__}")
        spec = dict(spec)
        times, skip = spec.pop("times", 1), spec.pop("skip", 0)
        if "kind" in spec:
            kind = spec.pop("kind")
            params = spec
        else:
            named = [k for k in spec if k in FAULT_KINDS]
            if len(named) != 1:
                raise ValueError(f"a fault needs a 'kind' or exactly one of {sorted(FAULT_KINDS)}; got {sorted(spec)}")
            kind = named[0]
            value = spec.pop(kind)
            params = dict(value) if isinstance(value, dict) else {}
            if kind == "invalid_rows" and "kind" in params:
                # Inside the shorthand "kind" names the corruption; canonically that is "error".
                params["error"] = params.pop("kind")
            if not isinstance(value, dict) and FAULT_KINDS[kind] is not None:
                params[FAULT_KINDS[kind]] = value
            params.update(spec)  # e.g. retry_after next to status
        return make_fault(kind, times=times, skip=skip, **params)


def make_fault(kind: str, times: int = 1, skip: int = 0, **params: Any) -> Fault:
    """Validate and normalise one fault; ValueError with a readable reason if invalid."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be a positive integer, got {times!r}")
    if not isinstance(skip, int) or skip < 0:
        raise ValueError(f"skip must be a non-negative integer, got {skip!r}")
    return Fault(kind, _check_params(kind, dict(params)), times, skip)


def _number(params: dict, key: str, default: Any, low: float, high: float | None = None) -> Any:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{key} must be a number {bound}, got {value!r}")
    return value


def _entity(params: dict, required: bool = True) -> str | None:
    name = params.get("entity")
    if name is None:
        if required:
            raise ValueError("this fault needs an 'entity' (entity name or extract key)")
        return None
    try:
        return entity_of(str(name)).name
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def _check_params(kind: str, p: dict) -> dict:
    if kind == "status":
        status = int(_number(p, "status", 500, 400, 599))
        retry_after = p.get("retry_after", 1 if status in (429, 503) else None)
        if retry_after is not None:
            retry_after = _number({"retry_after": retry_after}, "retry_after", 1, 0)
        return {"status": status, "retry_after": retry_after}
    if kind == "slow":
        return {"seconds": _number(p, "seconds", 5, 0)}
    if kind == "truncate":
        return {"bytes": int(_number(p, "bytes", 200, 0))}
    if kind in ("invalid_json", "reset", "empty"):
        return {}
    if kind == "drop_fraction":
        return {"entity": _entity(p), "fraction": float(_number(p, "fraction", 0.5, 0, 1))}
    if kind == "extra_fields":
        fields = p.get("fields", {"x_upstream_note": "added by a newer Model Garden"})
        if not isinstance(fields, dict) or not fields:
            raise ValueError("extra_fields needs 'fields', a non-empty object")
        return {"entity": _entity(p, required=False), "fields": fields}
    if kind == "invalid_rows":
        entity = entity_of(_entity(p))
        how = p.get("error", "missing_field")
        if how not in INVALID_ROW_KINDS:
            raise ValueError(f"invalid_rows kind must be one of {INVALID_ROW_KINDS}, got {how!r}")
        if how == "bad_money" and not any(f.type is FieldType.MONEY for f in entity.fields):
            raise ValueError(f"{entity.name} has no money field to corrupt")
        if how == "dangling_parent" and not entity.parents:
            raise ValueError(f"{entity.name} has no parent to dangle")
        return {"entity": entity.name, "count": int(_number(p, "count", 1, 1)), "error": how}
    # duplicate_ids
    return {"entity": _entity(p), "count": int(_number(p, "count", 1, 1))}


@dataclass
class RequestRecord:
    number: int
    at: datetime
    query: str
    faults: list[str] = field(default_factory=list)
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "at": self.at.isoformat(), "query": self.query,
                "faults": self.faults, "status": self.status}


class FaultPlan:
    """Pending faults and a log of extract requests; thread-safe."""

    def __init__(self, faults: list[Fault | dict] | None = None):
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self._log: list[RequestRecord] = []
        self._requests = 0
        for f in faults or ():
            self.add(f)

    def add(self, fault: Fault | dict | str, times: int = 1, skip: int = 0, **params: Any) -> Fault:
        """Add a Fault, a fault dict (canonical or shorthand) or ``add("status", status=429)``."""
        if isinstance(fault, str):
            fault = make_fault(fault, times=times, skip=skip, **params)
        elif isinstance(fault, dict):
            fault = Fault.from_dict({"times": times, "skip": skip, **fault})
        with self._lock:
            self._pending.append(fault)
        return fault

    def add_all(self, specs: dict | list) -> list[Fault]:
        """Add one fault dict or a list of them; all or nothing on a validation error."""
        faults = [Fault.from_dict(s) for s in (specs if isinstance(specs, list) else [specs])]
        with self._lock:
            self._pending.extend(faults)
        return faults

    def clear(self) -> int:
        with self._lock:
            n = len(self._pending)
            self._pending.clear()
            return n

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.kind, dict(f.params), f.times, f.skip) for f in self._pending]

    # per request -----------------------------------------------------------------------
    def begin_request(self, query: str = "") -> RequestRecord:
        """Count and log one extract request (before auth, so refused attempts count too)."""
        with self._lock:
            self._requests += 1
            record = RequestRecord(self._requests, datetime.now(timezone.utc), query)
            self._log.append(record)
            if len(self._log) > LOG_LIMIT:  # a long-running simulator is polled forever
                del self._log[: len(self._log) - LOG_LIMIT]
            return record

    def take(self, record: RequestRecord | None = None) -> list[Fault]:
        """The faults due on this request; each one's ``times`` goes down by one."""
        due: list[Fault] = []
        with self._lock:
            for fault in list(self._pending):
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                due.append(Fault(fault.kind, dict(fault.params), 1, 0))
                fault.times -= 1
                if fault.times <= 0:
                    self._pending.remove(fault)
            if record is not None:
                record.faults = [f.kind for f in due]
        return due

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Forget logged requests and restart the count at zero."""
        with self._lock:
            self._log.clear()
            self._requests = 0
