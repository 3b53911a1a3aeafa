"""Durable steps (`from molecule_runtime.adapters import step`): the journal on real
SQLite, PostgreSQL and in memory, and what an attempt gets back from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from molecule_runtime.adapters import StepMismatch, StepResultError, step
from molecule_runtime.execution.steps import AttemptSteps, journaling
from molecule_runtime.store.steps import StepStore
from molecule_runtime.store.steps_table import RecordedStep


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StepStore]:
    if request.param == "memory":
        yield StepStore(max_bytes=1000)
        return
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = request.getfixturevalue("postgres").database()
    engine = create_async_engine(url)
    steps = StepStore(engine, max_bytes=1000)
    await steps.initialize()
    try:
        yield steps
    finally:
        await engine.dispose()


class SideEffects:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def sync(self, what: str) -> dict[str, str]:
        self.calls.append(what)
        return {"did": what}

    async def later(self, what: str, *, n: int = 1) -> list[object]:
        await asyncio.sleep(0)
        self.calls.append(what)
        return [what, n, (1, 2)]


async def attempt(store: StepStore, effects: SideEffects, names: list[str]) -> list[object]:
    steps = await AttemptSteps.load(store, "task-1", "task-1-answer")
    with journaling(steps):
        out = []
        for name in names:
            if name.startswith("async"):
                out.append(await step(name, effects.later, name, n=2))
            else:
                out.append(await step(name, effects.sync, name))
        return out


async def test_a_later_attempt_replays_recorded_steps_and_runs_only_the_new_ones(store: StepStore) -> None:
    effects = SideEffects()
    first = await attempt(store, effects, ["a", "async-b", "a"])
    assert effects.calls == ["a", "async-b", "a"]
    # JSON read back on the first attempt too: every attempt sees the same value.
    assert first == [{"did": "a"}, ["async-b", 2, [1, 2]], {"did": "a"}]
    second = await attempt(store, effects, ["a", "async-b", "a", "c"])
    assert effects.calls == ["a", "async-b", "a", "c"]  # only c ran again
    assert second[:3] == first
    assert [s.name for s in await store.load("task-1", "task-1-answer")] == ["a", "async-b", "a", "c"]
    # Another turn of the task has a journal of its own.
    assert await store.load("task-1", "task-1-answer-2") == []


async def test_steps_asked_in_another_order_fail_clearly(store: StepStore) -> None:
    effects = SideEffects()
    await attempt(store, effects, ["search", "send-mail"])
    with pytest.raises(StepMismatch, match="recorded as 'search', but this attempt asks for 'send-mail'"):
        await attempt(store, effects, ["send-mail"])
    assert effects.calls == ["search", "send-mail"]  # the mail was not sent again


async def test_a_result_that_is_not_json_or_too_large_is_refused_at_the_call(store: StepStore) -> None:
    steps = await AttemptSteps.load(store, "task-2", "task-2-answer")
    with journaling(steps):
        with pytest.raises(StepResultError, match="not a JSON value"):
            await step("obj", lambda: object())
        with pytest.raises(StepResultError, match="MOLECULE_STEP_MAX_BYTES"):
            await step("big", lambda: "x" * 2000)
    assert await store.load("task-2", "task-2-answer") == []


async def test_an_exception_is_not_recorded_and_the_step_runs_again(store: StepStore) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("smtp down")
        return "sent"

    for expected in (RuntimeError, None):
        steps = await AttemptSteps.load(store, "task-3", "task-3-answer")
        with journaling(steps):
            if expected is None:
                assert await step("mail", flaky) == "sent"
            else:
                with pytest.raises(expected):
                    await step("mail", flaky)
    assert len(calls) == 2
    steps = await AttemptSteps.load(store, "task-3", "task-3-answer")
    with journaling(steps):
        assert await step("mail", flaky) == "sent"
    assert len(calls) == 2


async def test_two_attempts_recording_one_step_keep_the_first_result(store: StepStore) -> None:
    kept = await store.record("t", "t-answer", RecordedStep(0, "pay", '"first"'))
    assert kept.result == '"first"'
    raced = await store.record("t", "t-answer", RecordedStep(0, "pay", '"second"'))
    assert raced.result == '"first"'
    assert await store.delete(["t"]) >= 1
    assert await store.load("t", "t-answer") == []


async def test_outside_a_task_step_just_calls_fn() -> None:
    effects = SideEffects()
    assert await step("x", effects.sync, "x") == {"did": "x"}
    assert await step("y", effects.later, "y") == ["y", 1, (1, 2)]
    assert effects.calls == ["x", "y"]
    with pytest.raises(ValueError, match="non-empty name"):
        await step("", effects.sync, "z")
