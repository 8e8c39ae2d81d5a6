"""GroupCommitter: concurrent submits share store calls; a failure stays with the event that caused it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from garden_pipeline.events.group_commit import GroupCommitter


def _event(key: str):
    return SimpleNamespace(event_key=key)


def test_concurrent_submits_share_writes_and_a_poison_event_fails_alone_with_a_failing_fake_store():
    """A fake store: the point is a transaction that fails because of one event, which the real
    inbox cannot be made to do on demand (the receiver validates everything it could refuse)."""
    calls: list[list[str]] = []
    seen: set[str] = set()

    def store_each(events):
        keys = [e.event_key for e in events]
        calls.append(keys)
        if "poison" in keys:
            raise RuntimeError("insert failed")
        new = [k not in seen for k in keys]
        seen.update(keys)
        return new

    async def main():
        committer = GroupCommitter(store_each, max_batch=50, writers=1)
        committer.start()
        try:
            keys = [f"e{i}" for i in range(30)] + ["poison", "e1"]
            results = await asyncio.gather(*(committer.submit(_event(k)) for k in keys), return_exceptions=True)
        finally:
            await committer.stop()
        return keys, results

    keys, results = asyncio.run(main())
    answers = dict(zip(keys[:30], results[:30]))
    assert all(answers[f"e{i}"] is True for i in range(30))
    assert isinstance(results[30], RuntimeError)  # only the poison event's request fails
    assert results[31] is False  # the repeat of e1 is a duplicate
    assert len(calls[0]) > 1  # submitted together, written together
    assert ["poison"] in calls  # retried alone after the shared write failed


def test_submit_before_start_is_a_clear_error():
    async def main():
        await GroupCommitter(lambda events: [True] * len(events)).submit(_event("x"))

    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(main())
