"""A2A client helpers over real HTTP (the a2a-sdk client, JSON-RPC or REST)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import httpx
from a2a.client import ClientConfig, create_client
from a2a.client.client import Client
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)

TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


def user_message(text: str, *, task_id: str = "", context_id: str = "") -> Message:
    return Message(
        role=Role.ROLE_USER,
        message_id=str(uuid.uuid4()),
        parts=[Part(text=text)] if text is not None else [],
        task_id=task_id,
        context_id=context_id,
    )


async def make_client(
    url: str,
    *,
    streaming: bool = True,
    token: str | None = None,
    binding: str = "JSONRPC",
) -> Client:
    """`binding`: JSONRPC, HTTP+JSON or GRPC (the server needs MOLECULE_GRPC_PORT, see
    tests/support/grpc_client.py)."""
    if binding == "GRPC":
        from tests.support.grpc_client import make_grpc_client

        return await make_grpc_client(url, streaming=streaming, token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.AsyncClient(timeout=httpx.Timeout(60.0), headers=headers)
    config = ClientConfig(
        streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
    )
    return await create_client(url, client_config=config)


async def stream_events(client: Client, message: Message) -> AsyncIterator[StreamResponse]:
    async for event in client.send_message(SendMessageRequest(message=message)):
        yield event


def task_text(task: Task) -> str:
    return "".join(part.text for artifact in task.artifacts for part in artifact.parts)


def event_task_id(event: StreamResponse) -> str:
    which = event.WhichOneof("payload")
    if which == "task":
        return event.task.id
    if which == "status_update":
        return event.status_update.task_id
    if which == "artifact_update":
        return event.artifact_update.task_id
    return event.message.task_id


def artifact_chunks(events: list[StreamResponse]) -> list[str]:
    """The non-empty text parts of the artifact updates, in order: what the client saw
    arrive chunk by chunk (tests of streaming check how an answer was split). An
    artifact's closing update (`append: false`, `lastChunk: true`, the whole text
    streamed so far, for clients that keep only the last chunk) is not a chunk."""
    chunks: list[str] = []
    streamed: dict[str, str] = {}
    for event in events:
        if not event.HasField("artifact_update"):
            continue
        update = event.artifact_update
        artifact_id = update.artifact.artifact_id
        text = "".join(part.text for part in update.artifact.parts)
        before = streamed.get(artifact_id)
        if not update.append and update.last_chunk and before is not None and text.startswith(before):
            # The closing update: what it adds to what streamed (chunks merged into it) is a chunk.
            streamed[artifact_id] = text
            if text[len(before) :]:
                chunks.append(text[len(before) :])
            continue
        streamed[artifact_id] = (before or "" if update.append else "") + text
        chunks += [part.text for part in update.artifact.parts if part.text]
    return chunks


async def run_task(url: str, text: str) -> tuple[list[str], Task]:
    """Stream one message on a client of its own; the chunks it streamed and the task as
    stored after the stream ended (both views of one answer, for adapter tests)."""
    client = await make_client(url)
    try:
        events = [e async for e in stream_events(client, user_message(text))]
        task = await client.get_task(GetTaskRequest(id=event_task_id(events[0])))
        return artifact_chunks(events), task
    finally:
        await client.close()


async def send_texts(url: str, texts: list[str]) -> list[str]:
    """Send each text as a blocking (non-streaming) message and check it completed;
    the task ids, in order, for tests that look the tasks up again later."""
    client = await make_client(url, streaming=False)
    ids = []
    try:
        for text in texts:
            responses = [
                r async for r in client.send_message(SendMessageRequest(message=user_message(text)))
            ]
            assert responses[0].task.status.state == TaskState.TASK_STATE_COMPLETED
            ids.append(responses[0].task.id)
    finally:
        await client.close()
    return ids


async def assert_tasks_kept(url: str, ids: list[str], texts: list[str]) -> None:
    """Each task (sent with `send_texts`) is found completed with its text, and listed:
    the store kept them across a restart or shares them with another replica."""
    client = await make_client(url)
    try:
        for task_id, text in zip(ids, texts, strict=True):
            task = await client.get_task(GetTaskRequest(id=task_id))
            assert task.status.state == TaskState.TASK_STATE_COMPLETED
            assert task_text(task) == text
        listed = await client.list_tasks(ListTasksRequest())
        assert set(ids) <= {t.id for t in listed.tasks}
    finally:
        await client.close()


async def stream_until_chunks(
    client: Client, text: str, chunks: int = 1
) -> tuple[AsyncGenerator[StreamResponse, None], str]:
    """Start a streamed task and read it until `chunks` artifact updates arrived.

    The stream is returned still open, with the task id, so a test can cancel the task
    mid-answer and then `aclose()` the stream itself.
    """
    stream = cast(
        AsyncGenerator[StreamResponse, None],
        client.send_message(SendMessageRequest(message=user_message(text))),
    )
    task_id, seen = "", 0
    async for event in stream:
        task_id = event_task_id(event)
        if event.HasField("artifact_update"):
            seen += 1
            if seen >= chunks:
                break
    return stream, task_id


async def wait_terminal(
    client: Client,
    task_id: str,
    timeout: float = 30.0,
    *,
    retry_errors: bool = True,
) -> Task:
    """Poll GetTask until the task is terminal.

    `retry_errors`: a failed GetTask is tried again (the server may be restarting or
    reconnecting); False makes the first error fail the test.
    """
    deadline = time.monotonic() + timeout
    last: Task | None = None
    while time.monotonic() < deadline:
        try:
            last = await client.get_task(GetTaskRequest(id=task_id))
            if last.status.state in TERMINAL:
                return last
        except Exception:
            if not retry_errors:
                raise
        await asyncio.sleep(0.1)
    raise TimeoutError(f"task {task_id} not terminal after {timeout}s: {last}")


class BackgroundStream:
    """A streamed message read by a task of its own, so the test can act mid-answer
    (SIGKILL or SIGTERM the server, cancel the task) while events keep arriving.

    `may_break`: the stream is expected to break (the server dies under it); the error
    is kept in `error` instead of failing `finish()`.
    """

    def __init__(self, client: Client, message: Message, *, may_break: bool = False) -> None:
        self.events: list[StreamResponse] = []
        self.error: Exception | None = None
        self._may_break = may_break
        self._reader = asyncio.create_task(self._read(client, message))

    async def _read(self, client: Client, message: Message) -> None:
        try:
            async for event in stream_events(client, message):
                self.events.append(event)
        except Exception as exc:
            if not self._may_break:
                raise
            self.error = exc

    @property
    def chunks(self) -> int:
        """Artifact updates received so far."""
        return sum(e.WhichOneof("payload") == "artifact_update" for e in self.events)

    @property
    def task_id(self) -> str:
        """The id in the opening Task event."""
        return self.events[0].task.id

    async def wait_chunks(self, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until `count` artifact updates arrived."""
        deadline = time.monotonic() + timeout
        while self.chunks < count:
            if self._reader.done():
                self._reader.result()  # a reader that failed says why
                raise AssertionError(f"stream ended after {self.chunks} chunks: {self.events}")
            assert time.monotonic() < deadline, f"{self.chunks} of {count} chunks: {self.events}"
            await asyncio.sleep(0.02)

    async def finish(self, timeout: float) -> list[StreamResponse]:
        """Wait for the stream to end; every event it brought."""
        await asyncio.wait_for(self._reader, timeout)
        return self.events

    def cancel(self) -> None:
        self._reader.cancel()
