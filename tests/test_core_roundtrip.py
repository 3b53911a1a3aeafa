"""A2A round trips over real HTTP/SSE with the a2a-sdk client, JSON-RPC and REST bindings.

Two adapters: the built-in echo, and a test adapter loaded with `ADAPTER_MODULE=adapter`
from a directory that holds only `adapter.py` (the layout of a template repo).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)

from tests.support.a2a import (
    event_task_id,
    make_client,
    stream_until_chunks,
    task_text,
    user_message,
    wait_terminal,
)
from tests.support.durable import streamed_text
from tests.support.procs import ServerProcess, running_server
from tests.support.template_repo import template_repo

BINDINGS = ["JSONRPC", "HTTP+JSON"]
LONG_TEXT = " ".join(f"w{i}" for i in range(300))


@dataclass
class Agent:
    server: ServerProcess
    # The text that makes this adapter run for seconds, and the answer it gives `hello world`.
    slow_text: str
    answer: Callable[[str], str]


def echo_env() -> dict[str, str]:
    return {"ADAPTER_OPTIONS": '{"delay": 0.02}'}


@pytest.fixture(scope="module", params=["echo", "adapter-module"])
def agent(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One server per adapter for this module (the tests use their own tasks and contexts)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "echo":
        with running_server(root, echo_env()) as server:
            yield Agent(server, LONG_TEXT, lambda text: text)
        return
    template = template_repo(root / "template")
    with running_server(root, {"ADAPTER_MODULE": "adapter"}, cwd=template) as server:
        assert sorted(p.name for p in template.iterdir()) == ["adapter.py"]
        yield Agent(server, "slow", lambda text: f"probe: {text}")


@pytest.mark.parametrize("binding", BINDINGS)
async def test_send_get_list(agent: Agent, binding: str) -> None:
    client = await make_client(agent.server.url, streaming=False, binding=binding)
    try:
        responses = [
            r
            async for r in client.send_message(
                SendMessageRequest(message=user_message("hello world"))
            )
        ]
        assert len(responses) == 1 and responses[0].WhichOneof("payload") == "task"
        sent = responses[0].task
        assert sent.status.state == TaskState.TASK_STATE_COMPLETED
        assert task_text(sent) == agent.answer("hello world")

        got = await client.get_task(GetTaskRequest(id=sent.id))
        assert got.id == sent.id and got.context_id == sent.context_id
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        assert task_text(got) == agent.answer("hello world")
        assert [p.text for p in got.history[0].parts] == ["hello world"]

        responses = [
            r async for r in client.send_message(SendMessageRequest(message=user_message("again")))
        ]
        second = responses[0].task
        listed = await client.list_tasks(ListTasksRequest(include_artifacts=True))
        by_id = {t.id: t for t in listed.tasks}
        assert {sent.id, second.id} <= set(by_id)
        assert task_text(by_id[second.id]) == agent.answer("again")
        only_first = await client.list_tasks(ListTasksRequest(context_id=sent.context_id))
        assert [t.id for t in only_first.tasks] == [sent.id]
    finally:
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stream(agent: Agent, binding: str) -> None:
    client = await make_client(agent.server.url, binding=binding)
    try:
        events = [
            e
            async for e in client.send_message(
                SendMessageRequest(message=user_message("hello brave new world"))
            )
        ]
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task"
        assert "artifact_update" in kinds
        task_id = events[0].task.id
        assert all(event_task_id(e) == task_id for e in events)
        # A direct-mode task is created already working; its stream ends completed.
        assert events[0].task.status.state == TaskState.TASK_STATE_WORKING
        states = [e.status_update.status.state for e in events if e.HasField("status_update")]
        assert states[-1] == TaskState.TASK_STATE_COMPLETED
        # Read as A2A says (append adds, append=false replaces) the stream holds the answer once.
        assert streamed_text(events) == agent.answer("hello brave new world")
        # Its closing update is the whole answer (what Google ADK takes for the artifact).
        closing = [e.artifact_update for e in events if e.HasField("artifact_update")][-1]
        assert closing.last_chunk and not closing.append
        assert "".join(p.text for p in closing.artifact.parts) == agent.answer("hello brave new world")
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert task_text(got) == agent.answer("hello brave new world")
    finally:
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_cancel(agent: Agent, binding: str) -> None:
    client = await make_client(agent.server.url, binding=binding)
    other = await make_client(agent.server.url, binding=binding)
    try:
        stream, task_id = await stream_until_chunks(client, agent.slow_text)
        canceled = await other.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        final = await wait_terminal(other, task_id, timeout=10, retry_errors=False)
        assert final.status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()
        await other.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_subscribe(agent: Agent, binding: str) -> None:
    client = await make_client(agent.server.url, binding=binding)
    watcher = await make_client(agent.server.url, binding=binding)
    try:
        first = user_message(agent.slow_text)
        stream = client.send_message(SendMessageRequest(message=first))
        opening = await anext(stream)
        task_id = event_task_id(opening)

        async def watch() -> list:
            return [e async for e in watcher.subscribe(SubscribeToTaskRequest(id=task_id))]

        watching = asyncio.create_task(watch())
        # Let the subscriber see some of the running task, then end the task by cancelling it.
        await asyncio.sleep(0.3)
        await client.cancel_task(CancelTaskRequest(id=task_id))
        seen = await asyncio.wait_for(watching, 10)
        await stream.aclose()
        assert seen, "the subscription yielded nothing"
        assert all(event_task_id(e) == task_id for e in seen)
        kinds = [e.WhichOneof("payload") for e in seen]
        assert kinds[0] == "task", kinds
        assert "artifact_update" in kinds
        assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()
        await watcher.close()


async def test_subscribe_to_finished_task_is_an_error(agent: Agent) -> None:
    client = await make_client(agent.server.url)
    try:
        done = [
            e async for e in client.send_message(SendMessageRequest(message=user_message("hi")))
        ]
        task_id = event_task_id(done[0])
        with pytest.raises(Exception, match=r"(?i)terminal|not.*subscri|unsupported"):
            [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]
    finally:
        await client.close()
