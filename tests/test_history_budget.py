"""The conversation history handed to an adapter: newest whole messages within a byte
budget, read from the store without loading whole tasks (SQLite, PostgreSQL, memory)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from a2a.server.cluster import TaskVersion
from a2a.server.context import ServerCallContext
from a2a.types.a2a_pb2 import (
    Artifact,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    Task,
    TaskState,
    TaskStatus,
)

from molecule_runtime.store import open_stores
from molecule_runtime.store.conversation import (
    bounded_history,
    conversation_turns,
    turns_of_tasks,
)
from tests.fixtures.scripted_adapter import read_records
from tests.support.a2a import event_task_id, make_client, wait_terminal
from tests.support.durable import scripted_env, scripted_message

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


TURNS, TURN_BYTES, FOLLOW_UPS = 20, 3_500_000, 4


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


@pytest.mark.slow
async def test_follow_ups_to_a_long_conversation_stay_within_memory(
    server_factory, tmp_path: Path
) -> None:
    """20 turns of 3.5 MB in one conversation, then 4 follow-ups at once: the server
    reads their history within the budget instead of loading the 70 MB conversation
    per request (figures in docs/reliability.md)."""
    workdir = tmp_path / "srv"
    stores = await open_stores(f"sqlite+aiosqlite:///{workdir / 'data' / 'tasks.db'}")
    context_id = str(uuid.uuid4())
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(TURNS):
        task = _task(context_id, start + timedelta(seconds=i), [[f"{i}:" + "m" * TURN_BYTES]], [f"answer {i}"])
        await stores.tasks.save(task, prev_version=TaskVersion.MISSING, context=CONTEXT)
    await stores.aclose()

    records = tmp_path / "records"
    # Parallel: the four follow-ups read their history at the same time (the
    # default policy would run them one after another).
    env = scripted_env(records, MOLECULE_CONCURRENT_MESSAGES="parallel")
    server = server_factory(env, workdir=workdir)
    assert server.proc is not None
    pid = server.proc.pid
    client = await make_client(server.url)
    try:
        # Warm up the paths a follow-up takes (imports, pools) in another conversation.
        await client.get_task(GetTaskRequest(id=(await _follow_up(client, str(uuid.uuid4()))).id))
        before = _rss_kib(pid)
        peak = before
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, _rss_kib(pid))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        tasks = await asyncio.gather(*(_follow_up(client, context_id) for _ in range(FOLLOW_UPS)))
        sampling = False
        await sampler
    finally:
        await client.close()
    for task in tasks:
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, task.status
        seen = next(r for r in read_records(records, task.id) if r["event"] == "start")
        # Each earlier message is bigger than the budget: the history ends at the
        # last answer (the other follow-ups, running at once, may come after it).
        assert seen["history"][0] == ["assistant", f"answer {TURNS - 1}"]
        assert all(len(text) < 100 for _, text in seen["history"])
    growth_mib = (peak - before) / 1024
    print(
        f"RSS before the {FOLLOW_UPS} follow-ups {before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB "
        f"(+{growth_mib:.0f} MiB); process high-water mark {_rss_kib(pid, 'VmHWM') / 1024:.0f} MiB"
    )
    assert growth_mib < 200


async def _follow_up(client, context_id: str) -> Task:
    message = scripted_message("and now?", chunks=1)
    message.context_id = context_id
    events = [e async for e in client.send_message(SendMessageRequest(message=message))]
    return await wait_terminal(client, event_task_id(events[0]))
