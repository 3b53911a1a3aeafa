"""Submission rules around message replies, answers that were not taken and held
follow-ups, over real HTTP with the a2a-sdk client: a repeated message answered by a
Message gets the same Message (the adapter runs once) and a follow-up in its context is
not held up by it; an answer refused because the task's workflow cannot be reached is
taken when sent again with the same messageId; a follow-up waiting for its conversation
takes no place in line from other clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from a2a.client import Client
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Role,
    SendMessageRequest,
    StreamResponse,
    TaskState,
)
from a2a.utils.errors import UnsupportedOperationError

from molecule_runtime.server.earlier_tasks import PENDING_CLAIM_TIMEOUT
from tests.support.a2a import make_client, task_text, user_message
from tests.test_double_texting import stored
from tests.test_submission import ran, runs_of, same, submission_env, unique


async def reply_of(client: Client, message: Message) -> Message:
    response = await anext(client.send_message(SendMessageRequest(message=same(message))))
    assert response.HasField("message"), response
    return response.message


async def streamed(client: Client, message: Message) -> list[StreamResponse]:
    return [e async for e in client.send_message(SendMessageRequest(message=same(message)))]


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_a_repeated_message_gets_the_same_reply_and_its_context_is_not_blocked(
    store: str, server_factory, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    env = submission_env("direct", None, records, MOLECULE_CONCURRENT_MESSAGES="reject")
    env["ADAPTER_OPTIONS"] = json.dumps({"record_dir": str(records), "replies": True})
    if store == "memory":
        env["TASK_STORE_URL"] = "memory"
    server = server_factory(env)
    client = await make_client(server.url, streaming=False)
    streaming = await make_client(server.url)
    try:
        text = unique("hello")
        message = user_message(text)
        first = await reply_of(client, message)
        assert first.role == Role.ROLE_AGENT and first.parts[0].text == f"ok: {text}"

        started = time.monotonic()
        again = await reply_of(client, message)
        (event,) = await streamed(streaming, message)
        # Given back at once (no wait for a task that never comes), not run again.
        assert time.monotonic() - started < PENDING_CLAIM_TIMEOUT
        assert again == first
        assert event.message == first
        assert len(runs_of(records, text)) == 1

        # A follow-up in the same conversation: no running task to refuse it for.
        follow = unique("and then")
        answer = await reply_of(client, user_message(follow, context_id=first.context_id))
        assert answer.parts[0].text == f"ok: {follow}"
        (event,) = await streamed(streaming, user_message(unique("more"), context_id=first.context_id))
        assert event.HasField("message"), event

        # A repeat sent while the first send is still answered waits for that answer.
        held = unique("hold r")
        slow = user_message(held)
        sends = [asyncio.create_task(reply_of(client, slow)) for _ in range(2)]
        sends.append(asyncio.create_task(streamed(streaming, slow)))
        await ran(records, held)
        await asyncio.sleep(0.3)
        (records / f"release-{held.split()[1]}").touch()
        first_reply, second_reply, stream_events = await asyncio.wait_for(
            asyncio.gather(*sends), 30
        )
        assert first_reply == second_reply == stream_events[0].message
        assert first_reply.parts[0].text == f"held {held.split()[1]}"
        assert len(runs_of(records, held)) == 1
    finally:
        await client.close()
        await streaming.close()


@pytest.mark.temporal
async def test_an_answer_not_taken_is_taken_when_sent_again(
    request: pytest.FixtureRequest, server_factory, tmp_path: Path
) -> None:
    """A durable task's answer sent to a server without durable mode is refused and
    changes nothing; the same message (same messageId) to a durable server is taken."""
    records = tmp_path / "records"
    durable_env = submission_env("durable", request, records)
    direct_env = {k: v for k, v in durable_env.items() if k != "TEMPORAL_HOST"}
    workdir = tmp_path / "srv"

    async def with_client(env: dict[str, str], use) -> object:
        server = server_factory(env, workdir=workdir)
        client = await make_client(server.url, streaming=False)
        try:
            return await use(client)
        finally:
            await client.close()
            server.stop()

    async def ask(client: Client):
        return (await anext(client.send_message(SendMessageRequest(message=user_message("ask a"))))).task

    asked = await with_client(durable_env, ask)
    assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    answer = user_message(unique("bye"), task_id=asked.id)

    async def refused(client: Client):
        with pytest.raises(UnsupportedOperationError, match="durable server"):
            await anext(client.send_message(SendMessageRequest(message=same(answer))))
        return await client.get_task(GetTaskRequest(id=asked.id))

    untouched = await with_client(direct_env, refused)
    assert untouched.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert untouched.history == asked.history

    async def resend(client: Client):
        return (await anext(client.send_message(SendMessageRequest(message=same(answer))))).task

    done = await with_client(durable_env, resend)
    assert done.id == asked.id
    assert done.status.state == TaskState.TASK_STATE_COMPLETED, done.status
    assert [r["text"] for r in runs_of(records, answer.parts[0].text)] == [answer.parts[0].text]
    assert "ok: bye" in task_text(done)


async def test_a_held_follow_up_takes_no_place_in_line(server_factory, tmp_path: Path) -> None:
    """One running slot and one place in line: a follow-up waiting for its
    conversation's running task leaves the place to another client's message."""
    records = tmp_path / "records"
    env = submission_env(
        "direct",
        None,
        records,
        MOLECULE_MAX_RUNNING_TASKS="1",
        MOLECULE_MAX_QUEUED_TASKS="1",
    )
    server = server_factory(env)
    client = await make_client(server.url, streaming=False)
    try:
        held = unique("hold q")
        first = asyncio.create_task(
            anext(client.send_message(SendMessageRequest(message=user_message(held))))
        )
        await ran(records, held)
        first_id = runs_of(records, held)[0]["task_id"]
        context_id = (await stored(client, first_id)).context_id
        follow = asyncio.create_task(
            anext(client.send_message(SendMessageRequest(message=user_message(unique("f"), context_id=context_id))))
        )
        for _ in range(250):
            page = await client.list_tasks(ListTasksRequest(context_id=context_id))
            if len(page.tasks) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(page.tasks) == 2
        other = asyncio.create_task(
            anext(client.send_message(SendMessageRequest(message=user_message(unique("other")))))
        )
        # Taken (it waits for the slot), not refused as busy.
        await asyncio.sleep(0.5)
        if other.done():
            other.result()  # raises the refusal, if any
        (records / f"release-{held.split()[1]}").touch()
        results = await asyncio.wait_for(asyncio.gather(first, follow, other), 30)
        assert [r.task.status.state for r in results] == [TaskState.TASK_STATE_COMPLETED] * 3
    finally:
        await client.close()
