"""The live-task registry never leaks an entry, whatever the task's outcome."""

from __future__ import annotations

import asyncio

import pytest

from molecule_runtime.durable.registry import LiveTaskRegistry
from molecule_runtime.execution.events import TaskEvents


async def _noop(_: object) -> None:
    return None


async def test_no_leak_after_ten_thousand_tasks() -> None:
    registry = LiveTaskRegistry()

    async def one(i: int) -> None:
        events = TaskEvents(f"t{i}", "ctx", _noop)
        with registry.register(events) as entry:
            assert registry.get(f"t{i}") is entry
            await asyncio.sleep(0)
            if i % 3 == 1:
                raise RuntimeError("adapter failed")
            if i % 3 == 2:
                raise asyncio.CancelledError

    results = await asyncio.gather(*(one(i) for i in range(10_000)), return_exceptions=True)
    assert sum(isinstance(r, RuntimeError) for r in results) == 3333
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3333
    assert len(registry) == 0


async def test_finished_is_set_for_waiters() -> None:
    registry = LiveTaskRegistry()
    events = TaskEvents("t", "ctx", _noop)
    with pytest.raises(ValueError), registry.register(events) as entry:
        raise ValueError
    assert entry.finished.is_set()
    assert registry.get("t") is None
