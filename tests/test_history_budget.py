"""The conversation history handed to an adapter: newest whole messages within a byte
budget, read from the store without loading whole tasks (SQLite, PostgreSQL, memory)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import Artifact, Message, Part, Role, Task, TaskState, TaskStatus

from molecule_runtime.store import open_stores
from molecule_runtime.store.conversation import (
    bounded_history,
    conversation_turns,
    turns_of_tasks,
)

CONTEXT = ServerCallContext()


def _task(context_id: str, at: datetime, users: list[list[str]], answer: list[str]) -> Task:
    task_id = str(uuid.uuid4())
    task = Task(id=task_id, context_id=context_id, status=TaskStatus(state=TaskState.TASK_STATE_COMPLETED))
    task.status.timestamp.FromDatetime(at)
    for i, parts in enumerate(users):
        task.history.append(
            Message(
                role=Role.ROLE_USER,
                message_id=str(uuid.uuid4()),
                parts=[Part(text=t) for t in parts],
            )
        )
        if i < len(users) - 1:
            task.history.append(
                Message(role=Role.ROLE_AGENT, message_id=str(uuid.uuid4()), parts=[Part(text="q?")])
            )
    if answer:
        task.artifacts.append(
            Artifact(artifact_id=f"{task_id}-answer", parts=[Part(text=t) for t in answer])
        )
    # A file part is not history text: it must neither count nor appear.
    task.history[0].parts.append(Part(raw=b"\x00" * 5000, filename="blob.bin"))
    return task


def conversation(context_id: str) -> list[Task]:
    start = datetime.now(UTC) - timedelta(minutes=10)
    shapes = [
        ([["hello"]], ["hi ", "there"]),
        ([["a" * 3000, "second part"]], ["b" * 5000]),
        ([["ünïcödé ✓ " * 100]], ["antwort ✓ " * 200]),
        ([["question turn"], ["the answer to it"]], ["first ", "and second"]),
        ([[""]], []),  # empty text: not part of the history
        ([["latest " * 50]], ["reply " * 40]),
    ]
    return [
        _task(context_id, start + timedelta(seconds=i), users, answer)
        for i, (users, answer) in enumerate(shapes)
    ]


BUDGETS = [0, 10, 250, 300, 2000, 4500, 9000, 20000, 1 << 20]


async def _check_store(url: str) -> None:
    stores = await open_stores(url)
    try:
        context_id = str(uuid.uuid4())
        tasks = conversation(context_id)
        current = _task(context_id, datetime.now(UTC), [["now"]], [])
        for task in [*tasks, current]:
            await stores.tasks.save(task, prev_version=TaskVersion.MISSING, context=CONTEXT)
        # Another conversation and another owner's task never show up.
        await stores.tasks.save(
            _task(str(uuid.uuid4()), datetime.now(UTC), [["other"]], ["x"]),
            prev_version=TaskVersion.MISSING,
            context=CONTEXT,
        )
        everything = turns_of_tasks(tasks)
        assert ("user", "hello") in everything and ("assistant", "hi there") in everything
        for budget in BUDGETS:
            for max_messages in (40, 3):
                got = await conversation_turns(
                    stores.tasks,
                    context_id,
                    current.id,
                    CONTEXT,
                    budget=budget,
                    max_messages=max_messages,
                )
                assert got == bounded_history(everything, budget, max_messages), (budget, max_messages)
                assert sum(len(t.encode()) for _, t in got) <= budget
        full = await conversation_turns(
            stores.tasks, context_id, current.id, CONTEXT, budget=1 << 20, max_messages=40
        )
        assert full == everything
        assert full[-2:] == [("user", "latest " * 50), ("assistant", "reply " * 40)]
        assert ("user", "a" * 3000 + "\nsecond part") in full
        assert full.count(("user", "question turn")) == 1
    finally:
        await stores.aclose()


async def test_sqlite_reads_the_newest_messages_within_the_budget(tmp_path) -> None:
    await _check_store(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")


async def test_memory_store_keeps_the_same_cut(tmp_path) -> None:
    await _check_store("memory")


async def test_postgres_reads_the_newest_messages_within_the_budget(postgres) -> None:
    await _check_store(postgres.database())


def test_cut_falls_between_whole_messages() -> None:
    turns = [("user", "x" * 10), ("assistant", "y" * 10), ("user", "z" * 5)]
    assert bounded_history(turns, 15, 40) == [("assistant", "y" * 10), ("user", "z" * 5)]
    assert bounded_history(turns, 14, 40) == [("user", "z" * 5)]
    # A newer message too big for the budget ends the history: no gaps.
    assert bounded_history([("user", "old"), ("assistant", "n" * 100)], 50, 40) == []
    assert bounded_history(turns, 100, 2) == turns[-2:]
