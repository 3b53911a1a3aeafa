"""MOLECULE_CONCURRENT_MESSAGES over real HTTP, both modes (real Temporal): a second
message to a conversation whose task still runs — with its contextId, or carrying the
running task's id — is refused, waits for it, interrupts it, or runs beside it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from a2a.client import Client
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import TaskNotFoundError

from tests.fixtures.submission_adapter import runs
from tests.support.a2a import make_client, user_message, wait_terminal
from tests.test_submission import (
    MODES,
    ran,
    runs_of,
    stream_all,
    stream_task_id,
    submission_env,
    unique,
)

CHUNKS = 6
ANSWER = "".join(f"s{i} " for i in range(CHUNKS))


async def send(client: Client, message: Message) -> Task:
    return (await anext(client.send_message(SendMessageRequest(message=message)))).task


async def state(client: Client, task_id: str) -> int:
    return (await client.get_task(GetTaskRequest(id=task_id))).status.state


async def stored(client: Client, task_id: str) -> Task:
    """The task once GetTask finds it (its first write may still be on its way to the store)."""
    for _ in range(250):
        try:
            return await client.get_task(GetTaskRequest(id=task_id))
        except TaskNotFoundError:
            await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} never stored")


def second_of(first: Task, text: str, by_task_id: bool) -> Message:
    if by_task_id:
        return user_message(text, task_id=first.id)
    return user_message(text, context_id=first.context_id)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["enqueue", "reject", "interrupt", "parallel"])
async def test_a_second_message_while_the_first_runs(
    policy: str, mode: str, request: pytest.FixtureRequest, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    server = server_factory(
        submission_env(mode, request, records, MOLECULE_CONCURRENT_MESSAGES=policy)
    )
    streaming = await make_client(server.url)
    client = await make_client(server.url, streaming=False)
    try:
        # With the conversation's contextId, then with the running task's id.
        for by_task_id in (False, True):
            slow = unique(f"slow {CHUNKS}")
            first_stream = asyncio.create_task(stream_all(streaming, user_message(slow)))
            await ran(records, slow)
            first_id = runs_of(records, slow)[0]["task_id"]
            first = await stored(client, first_id)
            text = unique("second")
            message = second_of(first, text, by_task_id)

            if policy == "reject":
                with pytest.raises(Exception, match=first_id):
                    await send(client, message)
                await asyncio.wait_for(first_stream, 30)
                assert await state(client, first_id) == TaskState.TASK_STATE_COMPLETED
                assert not runs_of(records, text)
                continue

            second = asyncio.create_task(send(client, message))
            if policy == "enqueue":
                # It waits, stored as submitted, while the first runs.
                listed: list[Task] = []
                for _ in range(200):
                    page = await client.list_tasks(ListTasksRequest(context_id=first.context_id))
                    listed = [t for t in page.tasks if t.id != first_id]
                    if listed:
                        break
                    await asyncio.sleep(0.02)
                assert [t.status.state for t in listed] == [TaskState.TASK_STATE_SUBMITTED]
                assert not first_stream.done()
            done = await asyncio.wait_for(second, 30)
            assert done.status.state == TaskState.TASK_STATE_COMPLETED, done.status
            assert done.id != first_id and done.context_id == first.context_id
            (second_run,) = runs_of(records, text)
            if policy == "parallel":
                # Ran beside the first, which goes on to its end.
                assert not first_stream.done()
                await asyncio.wait_for(first_stream, 30)
                assert await state(client, first_id) == TaskState.TASK_STATE_COMPLETED
            else:
                await asyncio.wait_for(first_stream, 30)
                ended = await wait_terminal(client, first_id)
                history = [t for _, t in second_run["history"]]
                if policy == "enqueue":
                    # Ran after the first ended, with its whole answer in history.
                    assert ended.status.state == TaskState.TASK_STATE_COMPLETED
                    assert ANSWER in history, history
                else:
                    assert ended.status.state == TaskState.TASK_STATE_CANCELED
                    assert {"cancelled": slow, "task_id": first_id}.items() <= next(
                        r for r in runs(records) if r.get("cancelled") == slow
                    ).items()
    finally:
        await streaming.close()
        await client.close()


def final_state(events: list[StreamResponse]) -> int:
    last = events[-1]
    return last.task.status.state if last.HasField("task") else last.status_update.status.state


@pytest.mark.parametrize("mode", MODES)
async def test_messages_sent_at_once_to_a_new_conversation_run_one_after_another(
    mode: str, request: pytest.FixtureRequest, server_factory, tmp_path: Path
) -> None:
    """Four messages at once to a conversation with no task yet, streamed and
    then blocking: each waits only for the ones claimed before it, so all of
    them run, one after another, each with the earlier answers in its history."""
    records = tmp_path / "records"
    server = server_factory(submission_env(mode, request, records))
    streaming = await make_client(server.url)
    blocking = await make_client(server.url, streaming=False)
    try:
        for client in (streaming, blocking):
            context_id = str(uuid.uuid4())
            texts = [unique(f"turn {i}") for i in range(4)]
            sent = [user_message(text, context_id=context_id) for text in texts]
            answers = await asyncio.wait_for(
                asyncio.gather(*(stream_all(client, message) for message in sent)), 30
            )
            assert [final_state(a) for a in answers] == [TaskState.TASK_STATE_COMPLETED] * 4
            started = sorted((r for t in texts for r in runs_of(records, t)), key=lambda r: r["t"])
            assert len(started) == 4
            for i, run in enumerate(started):
                history = [text for _, text in run["history"]]
                earlier = [f"ok: {r['text']}" for r in started[:i]]
                assert [h for h in history if h.startswith("ok: turn")] == earlier, history
    finally:
        await streaming.close()
        await blocking.close()


async def test_messages_sent_at_once_interrupt_the_earlier_ones(
    server_factory, tmp_path: Path
) -> None:
    """`interrupt` with four messages at once to a new conversation: each cancels
    only the ones before it, so every stream ends and only the last one completes."""
    records = tmp_path / "records"
    server = server_factory(
        submission_env("direct", None, records, MOLECULE_CONCURRENT_MESSAGES="interrupt")
    )
    client = await make_client(server.url)
    try:
        context_id = str(uuid.uuid4())
        sent = [user_message(unique(f"slow {CHUNKS}"), context_id=context_id) for _ in range(4)]
        answers = await asyncio.wait_for(
            asyncio.gather(*(stream_all(client, message) for message in sent)), 30
        )
        ended = [await wait_terminal(client, stream_task_id(a)) for a in answers]
        states = [task.status.state for task in ended]
        assert set(states) <= {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_CANCELED}
        assert states.count(TaskState.TASK_STATE_COMPLETED) == 1, states
    finally:
        await client.close()
