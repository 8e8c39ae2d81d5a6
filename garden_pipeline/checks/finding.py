"""One check's verdict, independent of Dagster so the CLI's `status` can show it too."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Finding:
    passed: bool
    severity: str  # "WARN" or "ERROR": how bad it is when not passed
    summary: str
    metadata: dict = field(default_factory=dict)

    @classmethod
    def ok(cls, summary: str, **metadata) -> "Finding":
        return cls(True, "WARN", summary, metadata)
