"""Findings about one landed extract: schema drift, rejected rows, volume drift and the delete guard."""

from __future__ import annotations

from garden_pipeline.checks.finding import Finding
from garden_pipeline.gatewaydb.staging import LandedEntity


def schema_drift(le: LandedEntity, total_rows: int) -> Finding:
    """Unknown fields or optional fields absent from every row: WARN. A known field with another type: ERROR."""
    meta = {"unknown_fields": le.unknown_fields, "type_changes": le.type_changes,
            "missing_required": le.missing_required}
    never_present = sorted(f for f, n in le.absent_optional.items() if total_rows and n >= total_rows)
    meta["optional_fields_never_present"] = never_present
    if le.type_changes:
        return Finding(False, "ERROR", "type changed on known field(s): " + ", ".join(sorted(le.type_changes)), meta)
    if le.unknown_fields or le.missing_required or never_present:
        parts = []
        if le.unknown_fields:
            parts.append("unknown field(s): " + ", ".join(sorted(le.unknown_fields)))
        if le.missing_required:
            parts.append("required field(s) missing: " + ", ".join(sorted(le.missing_required)))
        if never_present:
            parts.append("optional field(s) absent from every row: " + ", ".join(never_present))
        return Finding(False, "WARN", "; ".join(parts), meta)
    return Finding.ok("fields match the catalogue", **meta)


def too_many_rejected(rejected: int, total: int, max_fraction: float, floor: int) -> bool:
    """The rule the rejected_rows check reports and the GatewayDB step enforces."""
    return rejected > max(max_fraction * total, floor)


def rejected_rows(le: LandedEntity, max_fraction: float, floor: int) -> Finding:
    total = le.rows + le.rejected
    share = le.rejected / total if total else 0.0
    meta = {"rejected": le.rejected, "rows": total, "share": round(share, 4), "max_share": max_fraction,
            "floor": floor, "sample": le.reject_samples}
    if too_many_rejected(le.rejected, total, max_fraction, floor):
        return Finding(False, "ERROR", f"{le.rejected} of {total} rows rejected ({share:.1%} > {max_fraction:.0%}); "
                       "the GatewayDB write is blocked", meta)
    return Finding.ok(f"{le.rejected} of {total} rows rejected", **meta)


def volume_drift(rows: int, previous: int | None, max_change: float, would_delete: int | None,
                 live: int | None, guard_trips: bool | None) -> Finding:
    """``guard_trips``: the delete guard's own verdict on this extract (None outside full mode)."""
    meta = {"rows": rows, "previous_rows": previous, "max_change": max_change, "would_delete": would_delete,
            "live_rows": live}
    problems = []
    if previous:
        change = abs(rows - previous) / previous
        meta["change"] = round(change, 4)
        if change > max_change:
            problems.append(f"row count moved {change:.1%} ({previous} → {rows})")
    if guard_trips is not None:
        meta["delete_guard"] = "would trip" if guard_trips else "passes"
        if guard_trips:
            problems.append(f"delete guard would trip: {would_delete} of {live} live rows absent")
    if problems:
        return Finding(False, "WARN", "; ".join(problems), meta)
    return Finding.ok("volume steady", **meta)
