"""Check thresholds, from the environment (documented in the README's configuration table)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from garden_pipeline.settings import env


def _number(name: str, default: str) -> float:
    value = env(name, default)
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{name}={value!r} must be a number") from None


@dataclass(frozen=True)
class Thresholds:
    max_rejected_fraction: float
    rejected_rows_floor: int  # this many invalid rows never block, whatever the share (small tables)
    volume_change: float
    freshness_warn: timedelta
    freshness_error: timedelta
    price_jump_factor: float
    drift_max_ids: int
    backlog_warn: timedelta
    backlog_error: timedelta

    @classmethod
    def from_env(cls) -> "Thresholds":
        return cls(
            max_rejected_fraction=_number("GARDEN_MAX_REJECTED_FRACTION", "0.05"),
            rejected_rows_floor=int(_number("GARDEN_REJECTED_ROWS_FLOOR", "10")),
            volume_change=_number("GARDEN_VOLUME_DRIFT_FRACTION", "0.2"),
            freshness_warn=timedelta(minutes=_number("GARDEN_FRESHNESS_WARN_MINUTES", "120")),
            freshness_error=timedelta(minutes=_number("GARDEN_FRESHNESS_ERROR_MINUTES", "360")),
            price_jump_factor=_number("GARDEN_PRICE_JUMP_FACTOR", "10"),
            drift_max_ids=int(_number("GARDEN_DRIFT_MAX_IDS", "20")),
            backlog_warn=timedelta(seconds=_number("GARDEN_INBOX_BACKLOG_WARN_SECONDS", "60")),
            backlog_error=timedelta(seconds=_number("GARDEN_INBOX_BACKLOG_ERROR_SECONDS", "600")),
        )
