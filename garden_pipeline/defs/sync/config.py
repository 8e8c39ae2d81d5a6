"""Run configuration an engineer can set in the Launchpad."""


from typing import Literal, Optional

from dagster import Config
from pydantic import Field

from garden_pipeline.settings import env

_DEFAULT_FRACTION = float(env("GARDEN_MAX_DELETE_FRACTION", "0.2"))  # type: ignore[arg-type]


class ExtractConfig(Config):
    """How to read Model Garden's /sync/all for this run."""

    mode: Literal["full", "incremental"] = Field(
        default="full",
        description="full: every live row, and rows absent are deleted; incremental: rows changed since the "
        "watermark, upserts only.",
    )
    updated_since: Optional[str] = Field(
        default=None,
        description="RFC 3339 time; re-pull everything changed since then (a backfill). Incremental mode only.",
    )
    overlap_seconds: int = Field(
        default=60, ge=0, description="Incremental mode re-reads this many seconds before the watermark."
    )
    dry_run: bool = Field(
        default=False,
        description="Report per entity what would be inserted, updated and deleted; write nothing to GatewayDB.",
    )


class GatewayWriteConfig(Config):
    """Safety switches for writing one entity into GatewayDB."""

    allow_large_delete: bool = Field(
        default=False, description="Let a full sync delete more than max_delete_fraction (or empty the table)."
    )
    max_delete_fraction: float = Field(
        default=_DEFAULT_FRACTION, ge=0, le=1,
        description="Largest share of live rows one full sync may delete (GARDEN_MAX_DELETE_FRACTION).",
    )
    delete_guard_min_rows: int = Field(
        default=0, ge=0, description="Deleting at most this many rows never trips the fraction test."
    )
    allow_rejected: bool = Field(
        default=False, description="Write even when the extract's rejected_rows check failed (too many invalid rows)."
    )
