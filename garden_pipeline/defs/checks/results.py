from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from garden_pipeline.checks.finding import Finding


def to_result(finding: Finding, **keys) -> AssetCheckResult:
    """A Finding as Dagster shows it: severity, a one-line description and JSON metadata."""
    metadata = {"summary": finding.summary}
    for k, v in finding.metadata.items():
        metadata[k] = MetadataValue.json(v) if isinstance(v, (dict, list)) else v
    return AssetCheckResult(
        passed=finding.passed,
        severity=AssetCheckSeverity.ERROR if finding.severity == "ERROR" else AssetCheckSeverity.WARN,
        description=finding.summary,
        metadata=metadata,
        **keys,
    )
