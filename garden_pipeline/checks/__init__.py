"""Drift and health findings about GatewayDB, computed in SQL; the Dagster checks wrap these."""

from garden_pipeline.checks.finding import Finding

__all__ = ["Finding"]
