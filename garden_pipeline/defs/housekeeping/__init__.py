"""Housekeeping: retention of Dagster's own run history."""
