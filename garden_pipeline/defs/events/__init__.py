"""Real-time path in Dagster: the inbox sensor, apply_events_job and the operators' jobs."""
