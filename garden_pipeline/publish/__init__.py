"""Delivering sync.completed events from the outbox to the Redis stream."""
