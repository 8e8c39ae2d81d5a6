"""Announcing completed syncs: the sync.completed outbox entry and its relay to Redis."""
