"""A2A round trips over real HTTP/SSE with the a2a-sdk client, JSON-RPC and REST bindings.

Two adapters: the built-in echo, and a test adapter loaded with `ADAPTER_MODULE=adapter`
from a directory that holds only `adapter.py` (the layout of a template repo).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
)

from tests.support import probe_adapter
from tests.support.a2a import event_task_id, make_client, task_text, user_message
from tests.support.procs import ServerProcess

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


def probe_template(root: Path) -> Path:
    """A directory holding only the test adapter as `adapter.py`."""
    template = root / "template"
    template.mkdir()
    shutil.copy(probe_adapter.__file__, template / "adapter.py")
    return template


@pytest.fixture(scope="module", params=["echo", "adapter-module"])
def agent(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One server per adapter for this module (the tests use their own tasks and contexts)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "echo":
        server = ServerProcess(root, echo_env())
        agent = Agent(server, LONG_TEXT, lambda text: text)
    else:
        template = probe_template(root)
        server = ServerProcess(root, {"ADAPTER_MODULE": "adapter"}, cwd=template)
        agent = Agent(server, "slow", lambda text: f"probe: {text}")
    server.start()
    if request.param != "echo":
        assert sorted(p.name for p in template.iterdir()) == ["adapter.py"]
    try:
        yield agent
    finally:
        server.stop()


async def terminal(client, task_id: str, timeout: float = 10.0) -> Task:
    """Poll GetTask until the task is in a terminal state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        task = await client.get_task(GetTaskRequest(id=task_id))
        if task.status.state in (
            TaskState.TASK_STATE_COMPLETED,
            TaskState.TASK_STATE_CANCELED,
            TaskState.TASK_STATE_FAILED,
            TaskState.TASK_STATE_REJECTED,
        ):
            return task
        assert asyncio.get_running_loop().time() < deadline, f"task still {task.status.state}"
        await asyncio.sleep(0.05)


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
        streamed = "".join(
            p.text
            for e in events
            if e.HasField("artifact_update")
            for p in e.artifact_update.artifact.parts
        )
        assert streamed == agent.answer("hello brave new world")
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert task_text(got) == agent.answer("hello brave new world")
    finally:
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_cancel(agent: Agent, binding: str) -> None:
    client = await make_client(agent.server.url, binding=binding)
    other = await make_client(agent.server.url, binding=binding)
    try:
        stream = client.send_message(SendMessageRequest(message=user_message(agent.slow_text)))
        task_id = ""
        async for event in stream:
            task_id = event_task_id(event)
            if event.HasField("artifact_update"):
                break
        canceled = await other.cancel_task(CancelTaskRequest(id=task_id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        await stream.aclose()
        final = await terminal(other, task_id)
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
