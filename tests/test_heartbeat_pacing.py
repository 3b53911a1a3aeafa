"""How often a running `llm_call` heartbeats: each heartbeat is a write in Temporal,
so they are sparse, until this process asks for the task's cancel (the request
comes back on a heartbeat reply): then they are frequent.

The pacing loop is exercised on its own, with `activity.heartbeat` recorded: the
delivery of the cancel through real Temporal is covered by the cancel tests in
test_durable.py and test_scale_out.py."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from molecule_runtime.adapters.echo import Adapter as EchoAdapter
from molecule_runtime.durable import activities as activities_module
from molecule_runtime.durable.activities import TaskActivities
from molecule_runtime.durable.llm_call import HURRIED_HEARTBEAT
from molecule_runtime.durable.registry import LiveTaskRegistry
from molecule_runtime.execution.events import TaskEvents


async def _beats(loop_task: asyncio.Task[None], beats: list[float], count: int) -> list[float]:
    """The first `count` beats, waited for: counts over a fixed sleep move with the machine's load."""
    deadline = time.monotonic() + 20
    while len(beats) < count:
        assert not loop_task.done()
        assert time.monotonic() < deadline, f"{len(beats)} of {count} heartbeats"
        await asyncio.sleep(0.01)
    return beats[:count]


async def test_heartbeats_are_sparse_until_a_cancel_is_asked_here(monkeypatch: pytest.MonkeyPatch) -> None:
    beats: list[float] = []
    monkeypatch.setattr(activities_module.activity, "heartbeat", lambda *a: beats.append(time.monotonic()))
    registry = LiveTaskRegistry()

    async def deliver(_event: object) -> None:
        return None

    # An interval no stall of this process reaches: a second regular beat cannot pass for a hurried one.
    activities = TaskActivities(EchoAdapter(), None, registry, heartbeat_interval=60.0)  # type: ignore[arg-type]
    with registry.register(TaskEvents("t1", "c1", deliver)) as entry:
        loop_task = asyncio.create_task(activities._heartbeat_loop("t1"))
        try:
            # One at once, then none for the rest of the interval.
            await _beats(loop_task, beats, 1)
            await asyncio.sleep(0.5)
            assert len(beats) == 1, beats
            entry.cancel_requested.set()
            # The waiting loop wakes at once, then beats every HURRIED_HEARTBEAT: five more
            # come in seconds, where the regular pace would take five minutes.
            hurried = await _beats(loop_task, beats, 6)
            gaps = [b - a for a, b in itertools.pairwise(hurried[1:])]
            assert all(gap >= HURRIED_HEARTBEAT * 0.9 for gap in gaps), gaps
        finally:
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)


async def test_a_headless_attempt_beats_at_the_regular_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    beats: list[float] = []
    monkeypatch.setattr(activities_module.activity, "heartbeat", lambda *a: beats.append(time.monotonic()))
    activities = TaskActivities(EchoAdapter(), None, LiveTaskRegistry(), heartbeat_interval=0.2)  # type: ignore[arg-type]
    loop_task = asyncio.create_task(activities._heartbeat_loop("nobody-here"))
    try:
        # Beats keep coming, never closer than the interval (load only widens the gaps).
        regular = await _beats(loop_task, beats, 4)
        gaps = [b - a for a, b in itertools.pairwise(regular)]
        assert all(gap >= 0.2 * 0.9 for gap in gaps), gaps
    finally:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
