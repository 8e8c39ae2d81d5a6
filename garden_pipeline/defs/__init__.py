"""Dagster definitions, one folder per area, each ending in a small ``Definitions``."""
