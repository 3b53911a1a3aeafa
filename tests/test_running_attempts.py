"""One `llm_call` attempt per task runs in a process (durable/running.py): a new
attempt stops the one before; an attempt that arrives after a later attempt of
the same `llm_call` started gives way instead."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.exceptions import ApplicationError

from molecule_runtime.durable.running import SUPERSEDED_TYPE, RunningAttempts


async def test_a_stale_attempt_gives_way_and_a_new_one_stops_the_last() -> None:
    running = RunningAttempts()
    began = asyncio.Event()

    async def attempt(activity_id: str, number: int) -> str:
        await running.take_over("t", activity_id, number)
        began.set()
        try:
            await asyncio.sleep(30)
        finally:
            running.leave("t")
        return "done"

    later = asyncio.create_task(attempt("call-1", 2))
    await began.wait()
    began.clear()
    # Attempt 1's dispatch was held up past its timeout: attempt 2 already runs.
    with pytest.raises(ApplicationError) as raised:
        await attempt("call-1", 1)
    assert raised.value.type == SUPERSEDED_TYPE and not later.done()
    # The llm_call moved (a new activity): its attempt 1 stops the old one.
    moved = asyncio.create_task(attempt("call-2", 1))
    await began.wait()
    assert later.cancelled() and not moved.done()
    assert running.later_than("t", "call-2", 0) and not running.later_than("t", "call-1", 0)
    moved.cancel()
    await asyncio.wait({moved})
    assert not running.later_than("t", "call-2", 0)
