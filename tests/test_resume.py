"""Resumable streams over real HTTP: SSE ids are offsets in the task's event log,
`Last-Event-ID` resumes after one, SubscribeToTask replays and follows, also
across a SIGKILL and restart of a durable server (real Temporal dev server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from a2a.client import ClientCallContext
from a2a.types.a2a_pb2 import GetTaskRequest, SendMessageRequest, SubscribeToTaskRequest

from tests.support.a2a import event_task_id, make_client, task_text, user_message, wait_terminal
from tests.support.durable import durable_env, streamed_text
from tests.support.procs import ServerProcess, running_server
from tests.support.sse import (
    A2A,
    assert_increasing,
    assert_stored_prefix_then,
    read_frames,
    resume_to_the_end,
    state_of,
    stream_request,
    subscribe_request,
    task_id_of,
    text_of,
)

WORDS = " ".join(f"w{i}" for i in range(40))


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory):
    env = {"RUNTIME": "echo", "ADAPTER_OPTIONS": '{"delay": 0.03}', "STREAM_BATCH_WINDOW": "0"}
    with running_server(tmp_path_factory.mktemp("resume"), env) as server:
        yield server


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_disconnect_then_resume_with_last_event_id(echo_server: ServerProcess, binding: str) -> None:
    base = echo_server.url
    async with httpx.AsyncClient(timeout=30) as http:
        before = await read_frames(http, stream_request(binding, base, WORDS), stop_after_chunks=5)
        task_id = task_id_of(before)
        assert_increasing(before)
        assert state_of(before[-1][1]) is None  # cut mid-answer

        after = await resume_to_the_end(http, binding, base, task_id, before)
        assert_increasing(after)

        # Nothing lost, nothing repeated: the two streams are exactly the log.
        replay = await read_frames(http, subscribe_request(binding, base, task_id), last_event_id=0)
        assert_stored_prefix_then(replay, before, after)
        assert text_of(before + after) == WORDS

        # Resuming at the end of a finished task's log: an empty stream.
        assert await read_frames(
            http, subscribe_request(binding, base, task_id), last_event_id=replay[-1][0]
        ) == []


async def test_resume_in_the_middle_of_a_subscription(echo_server: ServerProcess) -> None:
    base = echo_server.url
    async with httpx.AsyncClient(timeout=30) as http:
        opening = await read_frames(http, stream_request("JSONRPC", base, WORDS), stop_after_chunks=1)
        task_id = task_id_of(opening)
        # A subscriber (no offset) gets the task snapshot first, with the offset it reflects.
        first = await read_frames(http, subscribe_request("JSONRPC", base, task_id), stop_after_chunks=3)
        assert "task" in first[0][1] and first[0][0] >= opening[-1][0]
        rest = await read_frames(
            http, subscribe_request("JSONRPC", base, task_id), last_event_id=first[-1][0]
        )
        assert_increasing(first + rest)
        replay = await read_frames(http, subscribe_request("JSONRPC", base, task_id), last_event_id=0)
        assert rest == [f for f in replay if f[0] > first[-1][0]]
        assert first[1:] == [f for f in replay if first[0][0] < f[0] <= first[-1][0]]


async def test_sdk_client_reconnects_with_subscribe(echo_server: ServerProcess) -> None:
    client = await make_client(echo_server.url)
    try:
        stream = client.send_message(SendMessageRequest(message=user_message(WORDS)))
        seen = [await anext(stream) for _ in range(4)]
        await stream.aclose()  # the client drops the connection mid-answer
        task_id = event_task_id(seen[0])

        # Without an offset: the task as it is now, then what happens next.
        resumed = [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]
        snapshot = resumed[0].task
        # Read as A2A says: the snapshot, then appended chunks (the closing update replaces).
        text = streamed_text(resumed)
        final = await client.get_task(GetTaskRequest(id=task_id))
        assert text == task_text(final) == WORDS
        # The snapshot holds what was streamed before the disconnect.
        assert task_text(snapshot).startswith(streamed_text(seen))

        # With Last-Event-ID (the SDK client sends it as a service parameter): the whole log.
        replay_context = ClientCallContext(service_parameters={"Last-Event-ID": "0"})
        replay = [
            e
            async for e in client.subscribe(SubscribeToTaskRequest(id=task_id), context=replay_context)
        ]
        assert replay[0].task.id == task_id
        assert streamed_text(replay) == WORDS
        assert replay[-1].status_update.status.state == final.status.state
    finally:
        await client.close()


async def test_bad_last_event_id_is_refused(echo_server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        frames = await read_frames(http, stream_request("JSONRPC", echo_server.url, "hi"))
        task_id = task_id_of(frames)
        response = await http.get(
            f"{echo_server.url}/rest/tasks/{task_id}:subscribe",
            headers={**A2A, "Last-Event-ID": "not-a-number"},
        )
        assert response.status_code == 400
        assert "Last-Event-ID" in response.text


@pytest.mark.temporal
async def test_resume_across_sigkill_and_restart_in_durable_mode(
    temporal_server, server_factory, tmp_path: Path
) -> None:
    env = durable_env(temporal_server.address, tmp_path / "records")
    workdir = tmp_path / "crash"
    server = server_factory(env, workdir=workdir)
    request = stream_request("JSONRPC", server.url, "go", {"chunks": 30, "delay": 0.1})
    async with httpx.AsyncClient(timeout=30) as http:
        before = await read_frames(http, request, stop_after_chunks=3)
        task_id = task_id_of(before)
        server.kill()  # SIGKILL mid-answer: the rest is written by the headless retry

        restarted = server_factory(env, workdir=workdir, port=server.port)
        after = await resume_to_the_end(http, "JSONRPC", restarted.url, task_id, before, timeout=45)
        replay = await read_frames(
            http, subscribe_request("JSONRPC", restarted.url, task_id), last_event_id=0
        )
        # The crashed process's stored prefix, then the retry.
        assert_stored_prefix_then(replay, before, after)
        client = await make_client(restarted.url)
        try:
            task = await wait_terminal(client, task_id)
        finally:
            await client.close()
        assert text_of(replay) == task_text(task) == "".join(f"c{i} " for i in range(30))
